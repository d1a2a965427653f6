"""LAMMPS dumps (atom types, no element names) as input to the CLI: `aceuq gamma` and
`aceuq select` with `--elements`, checked against the γ the pair style wrote into the dump."""
import numpy as np
import pytest

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

from ase.io import read, write  # noqa: E402

from aceuq import lammps as aceuq_lammps  # noqa: E402
from aceuq.cli.main import main  # noqa: E402
from lmp_helpers import build_asi, create_system, set_aceuq, to_lammps_frame  # noqa: E402
from structures import rattled_bulk  # noqa: E402

try:
    aceuq_lammps.plugin_path()
except FileNotFoundError as exc:  # built without LAMMPS
    pytest.skip(str(exc), allow_module_level=True)

ELEMENTS = ["Cu", "Al"]


@pytest.fixture(scope="module")
def dumped(make_pot, tmp_path_factory):
    """A two-element potential, its .asi, and a LAMMPS dump (types 1 = Cu, 2 = Al; full-precision
    positions) of two steps of a rattled cell with the pair style's γ in column f_g."""
    import aceuq

    folder = tmp_path_factory.mktemp("dumps")
    path = make_pot("CuAl_sbessel")
    pot = aceuq.Potential(path)
    asi = build_asi(pot, folder / "pot.asi", [rattled_bulk(ELEMENTS, seed=s) for s in range(12)])
    atoms = to_lammps_frame(rattled_bulk(ELEMENTS, seed=99))
    dump = folder / "gamma.dump"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ELEMENTS)
        set_aceuq(lmp, path, ELEMENTS, active_set=asi)
        lmp.commands_string(f"""
            velocity all create 600 5 loop geom
            fix nve all nve
            fix g all pair 1 aceuq gamma 1
            dump d all custom 1 {dump} id type x y z f_g
            dump_modify d sort id format float %.17g
            run 1
        """)
    finally:
        lmp.close()
    return path, asi, dump, atoms


def test_gamma_of_a_dump_equals_the_pair_styles(dumped, tmp_path):
    path, asi, dump, atoms = dumped
    out = tmp_path / "graded.extxyz"
    assert main(["gamma", path, asi, str(dump), "--elements", "Cu Al", "-o", str(out), "--no-progress"]) == 0
    frames = read(dump, ":")
    graded = read(out, ":")
    assert len(graded) == len(frames) == 2
    for raw, g in zip(frames, graded):
        assert g.get_chemical_symbols() == [ELEMENTS[t - 1] for t in raw.arrays["type"]]
        # LAMMPS's γ (fix pair, in the dump) against aceuq's of the dumped positions (extxyz keeps
        # 8 decimals)
        assert raw.arrays["f_g"].max() > 0.1
        np.testing.assert_allclose(g.arrays["gamma"], raw.arrays["f_g"], rtol=1e-8, atol=1e-8)
    # ids are sorted: the symbols are the structure's own
    assert graded[0].get_chemical_symbols() == atoms.get_chemical_symbols()


def test_select_from_a_dump(dumped, tmp_path):
    path, asi, dump, _ = dumped
    out = tmp_path / "selected.extxyz"
    assert main(["select", path, str(dump), "--active-set", asi, "-n", "1", "-e", "Cu,Al", "-o", str(out),
                 "--no-progress"]) == 0
    sel = read(out, ":")
    assert len(sel) == 1 and set(sel[0].get_chemical_symbols()) == set(ELEMENTS)


def test_dump_without_elements_is_one_clear_error(dumped, tmp_path, capsys):
    path, asi, dump, _ = dumped
    out = tmp_path / "o.extxyz"
    assert main(["gamma", path, asi, str(dump), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gamma.dump" in err and "--elements" in err and "Traceback" not in err
    assert main(["gamma", path, asi, str(dump), "-e", "Cu", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gamma.dump" in err and "type 2" in err
    assert main(["gamma", path, asi, str(dump), "-e", "Cu Qq", "-o", str(out)]) == 1
    assert "Qq" in capsys.readouterr().err
    assert not out.exists()


def _write_dump(path, columns, rows):
    """A one-frame LAMMPS text dump (as `dump custom` writes it) in a 6 Å periodic box."""
    lines = ["ITEM: TIMESTEP", "0", "ITEM: NUMBER OF ATOMS", str(len(rows)), "ITEM: BOX BOUNDS pp pp pp",
             "0 6", "0 6", "0 6", "ITEM: ATOMS " + " ".join(columns)]
    lines += [" ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_dump_with_an_element_column_needs_no_elements(tmp_path):
    """A dump that names elements (dump_modify element) is read as ASE reads it, without -e; the
    types (1 for both Al and Ni here) do not decide the symbols, also when -e is given."""
    from aceuq.data import read_structures

    dump = _write_dump(tmp_path / "named.dump", ["id", "type", "element", "x", "y", "z"],
                       [(1, 1, "Al", 0, 0, 0), (2, 2, "Cu", 1.5, 1.5, 0), (3, 1, "Ni", 0, 1.5, 1.5)])
    ref = read(dump, ":")
    assert ref[0].get_chemical_symbols() == ["Al", "Cu", "Ni"]
    got = read_structures(dump)
    assert len(got) == 1
    assert got[0].get_chemical_symbols() == ref[0].get_chemical_symbols()
    np.testing.assert_array_equal(got[0].positions, ref[0].positions)
    assert read_structures(dump, "Cu Al")[0].get_chemical_symbols() == ["Al", "Cu", "Ni"]


def test_dump_with_atom_type_0_is_an_error_naming_it(tmp_path):
    """LAMMPS types count from 1 (`-e` gives types 1, 2, ...): a type 0 has no element."""
    import aceuq
    from aceuq.data import read_structures

    dump = _write_dump(tmp_path / "zero.dump", ["id", "type", "x", "y", "z"],
                       [(1, 1, 0, 0, 0), (2, 0, 1.5, 1.5, 0), (3, 2, 0, 1.5, 1.5)])
    with pytest.raises(aceuq.InputError, match="atom type 0") as err:
        read_structures(dump, "Cu Al")
    assert "zero.dump" in str(err.value)
    # types in range are mapped: 1 -> Cu, 2 -> Al
    ok = _write_dump(tmp_path / "ok.dump", ["id", "type", "x", "y", "z"],
                     [(1, 1, 0, 0, 0), (2, 2, 1.5, 1.5, 0), (3, 2, 0, 1.5, 1.5)])
    assert read_structures(ok, "Cu Al")[0].get_chemical_symbols() == ["Cu", "Al", "Al"]


def test_a_dump_or_xyz_whose_atom_count_disagrees_is_an_error_naming_it(tmp_path):
    """A frame cut short (a killed job, a dump still being written) or a corrupted count: ASE takes
    the count on trust (a smaller structure, or reading past the end for 10^12 atoms, a hang);
    aceuq names the file and frame. Timed out by the test run if it hangs."""
    import aceuq
    from aceuq.data import read_structures

    rows = [(i + 1, 1, 1.5 * (i % 3), 1.5 * (i // 3), 0) for i in range(6)]
    good = _write_dump(tmp_path / "good.dump", ["id", "type", "x", "y", "z"], rows)
    assert len(read_structures(good, "Cu")[0]) == 6
    text = open(good).read()
    cut = tmp_path / "cut.dump"
    cut.write_text("".join(text.splitlines(True)[:-2]))
    for path, count, match in ((cut, "6", "announces 6 atoms .* holds 4 atom lines: cut short"),
                               (tmp_path / "huge.dump", "999999999999", "announces 999999999999 atoms"),
                               (tmp_path / "less.dump", "3", "announces 3 atoms .* holds 6 atom lines$")):
        if path != cut:
            path.write_text(text.replace("ITEM: NUMBER OF ATOMS\n6\n", f"ITEM: NUMBER OF ATOMS\n{count}\n"))
        with pytest.raises(aceuq.InputError, match=match) as err:
            read_structures(str(path), "Cu")
        assert f"'{path}': frame 0" in str(err.value)
    xyz = tmp_path / "s.extxyz"
    ok = read(good, format="lammps-dump-text")
    write(xyz, [ok, ok])
    lines = xyz.read_text().splitlines(True)
    (tmp_path / "cut.extxyz").write_text("".join(lines[:-1]))
    (tmp_path / "huge.extxyz").write_text("".join(lines[:8] + ["999999999999\n"] + lines[9:]))
    for name in ("cut.extxyz", "huge.extxyz"):
        with pytest.raises(aceuq.InputError, match=r"frame 1 \(line 9\) announces .* atoms, but the file ends"):
            read_structures(str(tmp_path / name))
    # where a count belongs, a blank line ends the frames, as ASE reads them: a footer after it is
    # no frame; a file the check cannot decode is still one error naming it
    (tmp_path / "footer.extxyz").write_text("".join(lines) + "\n2 frames written by a script\n")
    assert len(read(tmp_path / "footer.extxyz", ":")) == len(read_structures(str(tmp_path / "footer.extxyz"))) == 2
    (tmp_path / "latin1.xyz").write_bytes(b"1\ncomment \xe9\nCu 0 0 0\n")
    with pytest.raises(aceuq.InputError, match="latin1.xyz': cannot be read by ASE \\(UnicodeDecodeError"):
        read_structures(str(tmp_path / "latin1.xyz"))


@pytest.mark.parametrize("compress", [None, "gz", "bz2", "xz"])
def test_multi_frame_dumps_read_as_ase_reads_them(tmp_path, compress):
    """Frames of changing atom count and box, with and without an element column, plain and
    compressed: read frame by frame (the bar moves; a compressed dump is decompressed once), the
    frames are the ones ASE's reader of the whole file gives."""
    import bz2
    import gzip
    import lzma

    from aceuq.data import read_structures

    rng = np.random.default_rng(3)
    for columns in (["id", "type", "x", "y", "z"], ["id", "type", "element", "x", "y", "z"]):
        text = ""
        for step, n in enumerate((5, 8, 3)):
            side = 6.0 + step
            rows = [(i + 1, 1 + i % 2) + (("Cu", "Al")[i % 2],) * ("element" in columns)
                    + tuple(rng.uniform(0, side, 3).round(6)) for i in range(n)]
            text += "\n".join(["ITEM: TIMESTEP", str(10 * step), "ITEM: NUMBER OF ATOMS", str(n),
                               "ITEM: BOX BOUNDS pp pp pp"] + [f"0 {side}"] * 3
                              + ["ITEM: ATOMS " + " ".join(columns)] + [" ".join(map(str, r)) for r in rows]) + "\n"
        path = tmp_path / ("d.dump" + (f".{compress}" if compress else ""))
        opener = {None: open, "gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compress]
        with opener(path, "wt") as fh:
            fh.write(text)
        ref = read(str(path), ":", format="lammps-dump-text")
        got = read_structures(str(path), "Cu Al")
        assert [len(a) for a in got] == [len(a) for a in ref] == [5, 8, 3]
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a.positions, b.positions)
            np.testing.assert_array_equal(a.cell.array, b.cell.array)
            if "element" in columns:
                assert a.get_chemical_symbols() == b.get_chemical_symbols()
            else:
                assert a.get_chemical_symbols() == [("Cu", "Al")[t - 1] for t in b.arrays["type"]]


def test_dump_with_units_and_time_items_and_forces(make_pot, tmp_path):
    """`dump_modify units yes time yes` opens frames with ITEM: UNITS / ITEM: TIME, not TIMESTEP:
    still a dump whose types take the given elements. Dumped forces are kept as the frames'
    forces, without the energy of 0.0 ASE's reader puts beside them (a dump holds no energy)."""
    from aceuq.data import read_structures

    path = make_pot("CuAl_sbessel")
    atoms = to_lammps_frame(rattled_bulk(ELEMENTS, seed=7))
    dump = tmp_path / "ut.dump"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ELEMENTS)
        set_aceuq(lmp, path, ELEMENTS)
        lmp.commands_string(f"""
            velocity all create 600 5 loop geom
            fix nve all nve
            dump d all custom 2 {dump} id type x y z fx fy fz
            dump_modify d sort id format float %.17g units yes time yes
            run 4
        """)
    finally:
        lmp.close()
    text = dump.read_text()
    assert text.startswith("ITEM: UNITS") and text.count("ITEM: TIME\n") == 3
    ref = read(str(dump), ":", format="lammps-dump-text")
    got = read_structures(str(dump), "Cu Al")
    assert len(got) == len(ref) == 3
    for a, b in zip(got, ref):
        assert a.get_chemical_symbols() == [ELEMENTS[t - 1] for t in b.arrays["type"]]
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        assert "energy" not in a.calc.results and b.calc.results["energy"] == 0.0
