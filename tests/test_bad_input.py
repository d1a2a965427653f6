"""Bad input gives one clear error naming the file and the problem, never a crash."""
import os
import re

import numpy as np
import pytest
from ase.build import bulk

import aceuq
from aceuq import InputError

pytest.importorskip("pyace")


@pytest.fixture(scope="module")
def good(make_pot):
    return make_pot("CuAl_sbessel")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def expect_error(path, pattern):
    with pytest.raises(InputError) as err:
        aceuq.Potential(path)
    msg = str(err.value)
    assert os.path.basename(path) in msg, msg
    assert re.search(pattern, msg), msg
    return msg


def test_missing_file(tmp_path):
    expect_error(str(tmp_path / "nope.yaml"), "cannot be opened")


def test_malformed_yaml(tmp_path):
    expect_error(write(tmp_path, "bad.yaml", "global: {DeltaSplineBins: 0.001\nspecies: [\n"), "malformed YAML")


def test_truncated_file(tmp_path, good):
    text = open(good).read()
    for frac in (0.2, 0.5, 0.9):
        cut = text[: int(len(text) * frac)]
        path = write(tmp_path, f"trunc{int(frac * 100)}.yaml", cut)
        with pytest.raises(InputError) as err:
            aceuq.Potential(path)
        assert os.path.basename(path) in str(err.value)


def test_not_a_potential(tmp_path):
    expect_error(write(tmp_path, "list.yaml", "- 1\n- 2\n"), "not a pacemaker potential")
    expect_error(write(tmp_path, "cfg.yaml", "elements: [Cu]\nembeddings: {}\nbonds: {}\n"), "configuration")
    expect_error(write(tmp_path, "empty.yaml", "global: {DeltaSplineBins: 0.001}\nspecies: []\n"), "species")


def test_unknown_radial_basis(tmp_path, good):
    text = open(good).read().replace("radbase: SBessel", "radbase: Gaussian")
    expect_error(write(tmp_path, "radbase.yaml", text), "Gaussian")


def test_unknown_embedding(tmp_path, good):
    text = open(good).read().replace("npoti: FinnisSinclairShiftedScaled", "npoti: Sqrt", 1)
    expect_error(write(tmp_path, "emb.yaml", text), "unknown embedding npoti 'Sqrt'")


def test_unknown_inner_cutoff(tmp_path, good):
    text = re.sub(r"inner_cutoff_type: \w+", "inner_cutoff_type: magic", open(good).read())
    expect_error(write(tmp_path, "inner.yaml", text), "inner_cutoff_type 'magic'")


def test_wrong_number_of_coefficients(tmp_path, good):
    text = re.sub(r"c: \[([^\],]+)\]", r"c: [\1, 1.0]", open(good).read(), count=1)
    expect_error(write(tmp_path, "coeff.yaml", text), "coefficients")


def test_function_beyond_radial_basis(tmp_path, good):
    text = re.sub(r"nr: \[1, 1\]", "nr: [1, 99]", open(good).read(), count=1)
    expect_error(write(tmp_path, "nr.yaml", text), "nr > nradmaxi|exceeds")


def test_the_two_blocks_of_a_pair_must_agree(tmp_path, good):
    """'Al Cu' and 'Cu Al' describe one bond: a file where they disagree is refused, naming the
    field, as pyace refuses it (LAMMPS keeps one neighbour cutoff per pair of types)."""
    pyace = pytest.importorskip("pyace")
    head, sep, rest = open(good).read().partition("speciesblock: Al Cu")
    for old, new, field in (("rcutij: 5\n", "rcutij: 6.2\n", r"rcutij \(6.2 vs 5\)"),
                            ("core-repulsion: [0, 1]", "core-repulsion: [5, 1]", r"core-repulsion \(\[5, 1\] vs \[0, 1\]\)"),
                            ("[[[1, 0, 0, 0, 0, 0]", "[[[0.9, 0.1, 0, 0, 0, 0]", "radcoefficients")):
        assert old in rest
        path = write(tmp_path, "pair.yaml", head + sep + rest.replace(old, new, 1))
        expect_error(path, f"blocks 'Al Cu' and 'Cu Al' differ in {field}")
        with pytest.raises(Exception, match="not consistent"):
            pyace.ACEBBasisSet(path)


def test_element_absent_from_potential(good):
    pot = aceuq.Potential(good)
    atoms = bulk("Ni", "fcc", a=3.52)
    with pytest.raises(InputError, match=r"Ni.*does not describe"):
        pot.evaluate(atoms)
    with pytest.raises(InputError, match="Fe"):
        pot.n_functions("Fe")


def test_nan_positions(good):
    pot = aceuq.Potential(good)
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.positions[3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        pot.evaluate(atoms)


def test_atoms_too_close_is_an_error_not_a_crash(good):
    pot = aceuq.Potential(good)
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.positions[1] = atoms.positions[0] + [1e-4, 0, 0]
    # the atoms are named (the first one evaluated, and its nearest neighbour at their distance)
    with pytest.raises(ValueError, match=r"atom 0 \(nearest neighbour: atom 1 at 0\.0001 Å\): .*too close"):
        pot.evaluate(atoms)
    with pytest.raises(ValueError, match=r"atom 1 \(nearest neighbour: atom 0 at 0\.0001 Å\): .*too close"):
        pot.projections([atoms], atoms=[np.arange(len(atoms)) == 1])
    # and so are they in an ensemble's evaluation (members sharing the basis)
    member = {el: pot.coefficients(el) for el in pot.elements}
    with pytest.raises(ValueError, match=r"atom 0 \(nearest neighbour: atom 1 at 0\.0001 Å\): .*too close"):
        pot.evaluate_ensemble(atoms, [member, member])


def test_no_element_a_nul_in_a_name_and_a_coarse_spline_grid(good, tmp_path):
    """An atomic number beyond the periodic table is an InputError (not an IndexError); a file name
    with a NUL is refused (C++ would read another file, the name up to the NUL); a distance below
    a coarse DeltaSplineBins' first node says where that node is and that the grid may be why."""
    from ase import Atoms

    pot = aceuq.Potential(good)
    with pytest.raises(InputError, match="atomic number 130 is no element"):
        pot.evaluate(Atoms(numbers=[29, 130], positions=[[0, 0, 0], [2.5, 0, 0]]))
    with pytest.raises(InputError, match="cannot hold a NUL character"):
        aceuq.Potential(good + "\0junk")
    text = open(good).read()
    assert "DeltaSplineBins: 0.001" in text
    coarse = tmp_path / "coarse.yaml"
    coarse.write_text(text.replace("DeltaSplineBins: 0.001", "DeltaSplineBins: 2.5"))
    with pytest.raises(InputError, match=r"below the first spline node, at 2\.50* \(atoms too close, or the "
                                         r"potential's DeltaSplineBins is too coarse\)"):
        aceuq.Potential(str(coarse)).evaluate(bulk("Cu", "fcc", a=3.5))  # neighbours at 2.47


def test_non_finite_and_out_of_range_numbers(tmp_path, good):
    """A potential with nan/inf, or a size that would allocate without bound, is refused when read
    (before: nan energies from LAMMPS, or std::bad_alloc)."""
    text = open(good).read()
    first_c = re.search(r"c: \[[^,\]]+", text)
    expect_error(write(tmp_path, "nan_c.yaml", text[:first_c.start()] + "c: [.nan" + text[first_c.end():]),
                 r"key 'c' holds a non-finite number")
    expect_error(write(tmp_path, "inf_rcut.yaml", re.sub(r"rcutij: [0-9.eE+-]+", "rcutij: .inf", text, count=1)),
                 r"key 'rcutij' holds a non-finite number")
    expect_error(write(tmp_path, "lmax.yaml", re.sub(r"lmaxi: \d+", "lmaxi: 2000000000", text, count=1)),
                 r"'lmaxi' = 2000000000 is outside 0\.\.50")
    expect_error(write(tmp_path, "ndens.yaml", re.sub(r"ndensityi: \d+", "ndensityi: 2000000000", text, count=1)),
                 r"'ndensityi' = 2000000000 is outside")
    expect_error(write(tmp_path, "exp0.yaml", re.sub(r"parameters: \[([^,]+), [^,\]]+", r"parameters: [\1, 0",
                                                     text, count=1)),
                 r"exponent of density 0 in 'parameters' must be > 0")
    cheb = re.sub(r"radparameters: \[[^\]]*\]", "radparameters: [0]", text.replace("radbase: SBessel",
                                                                                  "radbase: ChebExpCos"))
    expect_error(write(tmp_path, "lambda0.yaml", cheb), r"lambda\) of ChebExpCos must be > 0")


def test_wrong_shapes_and_kinds_of_file(tmp_path, good):
    text = open(good).read()
    expect_error(write(tmp_path, "scalar.yaml", re.sub(r"global:\n(  .*\n)+", "global: 7\n", text, count=1)),
                 r"global: expected a mapping")
    folder = tmp_path / "a_folder.yaml"
    folder.mkdir()
    expect_error(str(folder), "is a directory")
    yace = write(tmp_path, "p.yace", "elements: [Cu]\nE0: [0]\ndeltaSplineBins: 0.001\nembeddings: {}\n"
                                     "bonds: {}\nfunctions: {}\n")
    expect_error(yace, r"\.yace file .* use the \.yaml potential")


def test_structure_errors_name_file_and_frame(good, tmp_path):
    from ase.io import write as ase_write

    from aceuq.data import read_structures

    pot = aceuq.Potential(good)
    ok = bulk("Cu", "fcc", a=3.6).repeat(2)
    close = ok.copy()
    close.positions[1] = close.positions[0] + [1e-4, 0, 0]
    ase_write(tmp_path / "set.extxyz", [ok, ok, close])
    frames = read_structures(tmp_path / "set.extxyz")
    with pytest.raises(InputError, match=r"set\.extxyz', frame 2: .*too close"):
        pot.evaluate(frames)
    with pytest.raises(InputError, match=r"set\.extxyz', frame 2: .*too close"):
        pot.projections(frames)
    nickel = bulk("Ni", "fcc", a=3.52)
    with pytest.raises(InputError, match=r"^structure 1: element\(s\) Ni"):  # not read from a file
        pot.projections([ok, nickel])


def test_zeroed_active_set_is_refused(good, tmp_path):
    """An inverse with an all-zero column would grade every atom 0 in that direction (and an
    all-zero file every atom 0): no invertible matrix has one."""
    from potentials import emt_training_set

    from aceuq.activeset import ActiveSet, build_active_set, load_npz

    pot = aceuq.Potential(good)
    path = build_active_set(pot, emt_training_set(["Cu", "Al"], n=10, seed=5)).save(str(tmp_path / "g.asi"))
    data = load_npz(path)
    data["Cu"] = data["Cu"].copy()
    data["Cu"][:, 2] = 0.0
    with open(tmp_path / "zero_column.asi", "wb") as fh:  # (a path would get .npz appended)
        np.savez(fh, **data)
    with pytest.raises(InputError, match=r"zero_column\.asi.*'Cu' has an all-zero column 2"):
        ActiveSet.load(str(tmp_path / "zero_column.asi"), pot)
    with open(tmp_path / "zeros.asi", "wb") as fh:
        np.savez(fh, **{el: np.zeros_like(m) for el, m in data.items()})
    with pytest.raises(InputError, match=r"zeros\.asi.*all-zero column 0"):
        ActiveSet.load(str(tmp_path / "zeros.asi"), pot)


def tiny_potential(tmp_path, name, funcs=("{type: Cu Cu, nr: [1], nl: [0], c: [1.0]}",), nradmax=1, lmax=0,
                   nradbase=1, rcut=5.0, dsb=0.001):
    """A one-element potential of the given sizes, written for the test (R_nl = g_n, c = 1)."""
    crad = [[[1.0 if k == n else 0.0 for k in range(nradbase)] for _ in range(lmax + 1)] for n in range(nradmax)]
    nbody = "".join(f"      - {f}\n" for f in funcs)
    return write(tmp_path, name, f"""global:
  DeltaSplineBins: {dsb}
species:
  - speciesblock: Cu
    ndensityi: 1
    npoti: FinnisSinclair
    parameters: [1, 1]
    nradmaxi: {nradmax}
    lmaxi: {lmax}
    nradbaseij: {nradbase}
    radbase: SBessel
    radparameters: [1]
    radcoefficients: {crad}
    rcutij: {rcut}
    dcutij: 0.01
    nbody:{"" if funcs else " []"}
{nbody}""")


def rank6(l, lint):
    return f"{{type: Cu Cu Cu Cu Cu Cu Cu, nr: [1,1,1,1,1,1], nl: [{l},{l},{l},{l},{l},{l}], lint: {lint}, c: [1.0]}}"


def test_angular_coupling_work_is_bounded(tmp_path):
    """Coupling a function walks prod(2l+1) m-combinations: rank 6 with nl = 20 took minutes
    (LAMMPS pair_coeff too). Refused when read, per function and per file; real sizes load."""
    pair = "{type: Cu Cu, nr: [1], nl: [0], c: [1.0]}"
    expect_error(tiny_potential(tmp_path, "rank6_l10.yaml", [pair, rank6(10, "[0, 0, 0, 0]")], lmax=10),
                 r"block 'Cu', nbody\[1\] \('Cu Cu Cu Cu Cu Cu Cu', nl \[10,10,10,10,10,10\]\): .* more than "
                 r"the limit of 1e\+06 per function")
    many = [pair] + [rank6(7, "[0, 0, 0, 0]")] * 70
    expect_error(tiny_potential(tmp_path, "many.yaml", many, lmax=7), r"nbody\[\d+\]: .* more than the limit of "
                                                                      r"5e\+07 per file")
    real = aceuq.Potential(tiny_potential(tmp_path, "rank6_l6.yaml", [pair, rank6(6, "[6, 6, 6, 6]")], lmax=6))
    assert real.n_functions("Cu") == 2


def test_an_intermediate_lint_beyond_the_sum_of_ls_is_refused(tmp_path):
    """lint is an intermediate angular momentum of the coupling: at most the sum of the ls it
    couples. An edited 1100000000 overflowed int sizes (a 12.8 GB table at 20000): one clear
    error naming the file and the function."""
    pair = "{type: Cu Cu, nr: [1], nl: [0], c: [1.0]}"
    for lint in ("[1100000000, 1100000000]", "[20000, 20000]", "[5, 5]"):
        rank4 = f"{{type: Cu Cu Cu Cu Cu, nr: [1,1,1,1], nl: [1,1,1,1], lint: {lint}, c: [1.0]}}"
        expect_error(tiny_potential(tmp_path, "lint.yaml", [pair, rank4], lmax=1),
                     r"lint\.yaml': block 'Cu': function with .*LS=\[.*\]\): LS must be >= 0 "
                     r"and <= the sum of ls \(4\)")
    rank4 = "{type: Cu Cu Cu Cu Cu, nr: [1,1,1,1], nl: [1,1,1,1], lint: [2, 2], c: [1.0]}"
    assert aceuq.Potential(tiny_potential(tmp_path, "ok.yaml", [pair, rank4], lmax=1)).n_functions("Cu") == 2


def test_radial_table_size_is_bounded(tmp_path):
    """The spline table has (rcut/DeltaSplineBins + 1) nodes x (nradbase + nradmax (lmax+1) + 1)
    functions x 4 doubles: a few edited numbers asked for GBs (std::bad_alloc), and the node
    count overflowed int (reported as 'DeltaSplineBins larger than the cutoff')."""
    too_big = r"bond Cu-Cu: its radial spline table would take .* GiB, more than the limit of 0\.5 GiB"
    expect_error(tiny_potential(tmp_path, "rcut.yaml", rcut=20000), too_big + r": rcutij / DeltaSplineBins = "
                                                                              r"20000 / 0\.001 gives 20000001 grid")
    expect_error(tiny_potential(tmp_path, "dsb.yaml", dsb=1e-8), too_big + r".* = 5 / 1e-08")
    expect_error(tiny_potential(tmp_path, "sizes.yaml", nradmax=100, lmax=50, rcut=20),
                 too_big + r".*for 5102 functions \(nradbaseij = 1, nradmaxi = 100, lmaxi = 50")
    expect_error(tiny_potential(tmp_path, "rcut1e12.yaml", rcut=1e12), too_big + r".* = 1e\+12 / 0\.001")
    expect_error(tiny_potential(tmp_path, "dsb1e300.yaml", dsb=1e300),
                 r"DeltaSplineBins = 1e\+300 is larger than the cutoff rcutij = 5")
    assert aceuq.Potential(tiny_potential(tmp_path, "ok.yaml", rcut=10, dsb=1e-4)).cutoff == 10


def zip_declaring(path, entries):
    """A zip whose central directory declares each (name, uncompressed size) as deflated at a
    plausible ratio (1000:1) over junk data: only a reader that inflates before checking sizes
    gets past the directory."""
    import struct

    body, central = b"", b""
    for name, usize in entries:
        name = name.encode()
        data = bytes(usize // 1000)
        fields = (20, 0, 8, 0, 0, 0, len(data), usize, len(name))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, len(body)) + name
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0)
    with open(path, "wb") as fh:
        fh.write(body + central + end)
    return str(path)


def test_active_set_archive_sizes_are_bounded_before_inflating(tmp_path, good):
    """A few MB of .asi declaring GBs of deflated arrays (a zip bomb) was inflated entry by entry
    before any shape was compared: > 7 GB for 6 MB. Refused from the declared sizes."""
    from aceuq.activeset import ActiveSet

    pot = aceuq.Potential(good)
    big = zip_declaring(tmp_path / "big.asi", [("Cu.npy", 1_500_000_000)])
    with pytest.raises(InputError, match=r"big\.asi' .*entry 'Cu\.npy' declares 1500000000 bytes uncompressed "
                                         r"\(1\.4 GiB\), more than the limit of 1 GiB per array"):
        ActiveSet.load(big, pot)
    bomb = zip_declaring(tmp_path / "bomb.asi", [("Cu.npy", 900_000_000), ("Al.npy", 900_000_000),
                                                 ("X.npy", 900_000_000)])
    with pytest.raises(InputError, match=r"bomb\.asi' .*entries up to 'X\.npy' declare 2\.51 GiB uncompressed, "
                                         r"more than the limit of 2 GiB per file"):
        ActiveSet.load(bomb, pot)


def test_active_sets_too_large_to_read_back_are_not_written(tmp_path):
    """The writers refuse what the reader's limits above would refuse (an entry over 1 GiB, or
    2 GiB in all), naming the file and the entry, before writing anything. (np.zeros does not touch
    its memory: nothing is allocated.)"""
    from aceuq.activeset import write_asi

    n = int((1024 ** 3 / 8) ** 0.5) + 1      # an n x n inverse of doubles: just over 1 GiB
    with pytest.raises(InputError, match=rf"big\.asi': entry 'Cu' would hold {8 * n * n} bytes, more than the "
                                         rf"{1024 ** 3 - 1024} an active set entry"):
        write_asi(tmp_path / "big.asi", {"Cu": np.zeros((n, n))})
    m = int((0.8 * 1024 ** 3 / 8) ** 0.5)    # three of 0.8 GiB
    with pytest.raises(InputError, match=rf"many\.asi': the arrays would hold {3 * (8 * m * m + 1024)} bytes in "
                                         rf"all \(with their headers\), more than the {2 * 1024 ** 3} \(2 GiB\)"):
        write_asi(tmp_path / "many.asi", {el: np.zeros((m, m)) for el in ("Al", "Cu", "Ni")})
    assert not any(tmp_path.iterdir())
    ok = tmp_path / "ok.asi"
    write_asi(ok, {"Cu": np.eye(3)})
    np.testing.assert_array_equal(aceuq._core.read_npz(str(ok))["Cu"], np.eye(3))


def test_non_utf8_bytes_quoted_from_files(tmp_path, good):
    """Messages quoting a byte that is not UTF-8 (an entry name, a .casi meta value, a YAML value)
    reached Python as UnicodeDecodeError; now InputError with the byte escaped."""
    import json

    from aceuq.activeset import ActiveSet

    pot = aceuq.Potential(good)
    with open(tmp_path / "name.asi", "wb") as fh:
        np.savez(fh, Cx=np.eye(2))
    raw = (tmp_path / "name.asi").read_bytes()
    assert raw.count(b"Cx.npy") == 2  # local and central header
    (tmp_path / "name.asi").write_bytes(raw.replace(b"Cx.npy", b"C\xff.npy"))
    with pytest.raises(InputError, match=r"name\.asi'.*element\(s\) C\\xff that the potential"):
        ActiveSet.load(str(tmp_path / "name.asi"), pot)

    meta = json.dumps({"format": "aceuq.casi", "version": 1, "fingerprint": pot.fingerprint, "mode": "@"}).encode()
    with open(tmp_path / "meta.casi", "wb") as fh:
        np.savez(fh, meta=np.frombuffer(meta.replace(b"@", b"\xff"), dtype=np.uint8))
    with pytest.raises(InputError, match=r"meta\.casi'.*'mode' must be 'linear' or 'full', got '\\xff'"):
        ActiveSet.load(str(tmp_path / "meta.casi"), pot)

    text = open(good, "rb").read().replace(b"radbase: SBessel", b"radbase: SBess\xe9l")
    (tmp_path / "radbase.yaml").write_bytes(text)
    expect_error(str(tmp_path / "radbase.yaml"), r"radbase\) 'SBess\\xe9l'")


def test_element_without_functions(tmp_path):
    """pyace loads and evaluates a potential whose 'nbody' is empty, so it loads; asking for
    projections of its atoms named the structure file and an internal buffer, not the potential."""
    path = tiny_potential(tmp_path, "zero.yaml", funcs=())
    pot = aceuq.Potential(path)
    assert pot.n_functions("Cu") == 0
    atoms = bulk("Cu", "fcc", a=3.6)
    assert np.isfinite(pot.evaluate(atoms).energy)
    with pytest.raises(InputError, match=r"potential file '.*zero\.yaml': element Cu has no B functions"):
        pot.projections([atoms])


@pytest.mark.parametrize("old,new,field", [("core-repulsion: [0, 1]", "core-repulsion: [7, 1]", "core-repulsion"),
                                           ("core-repulsion: [0, 1]", "core-repulsion: [0, 3]", "core-repulsion"),
                                           ("r_in: 2\n", "r_in: 1.8\n", "r_in"),
                                           ("delta_in: 0.5\n", "delta_in: 0.3\n", "delta_in"),
                                           ("inner_cutoff_type: distance", "inner_cutoff_type: density",
                                            "inner_cutoff_type")])
def test_pair_block_without_radial_basis_must_agree_with_its_mirror(tmp_path, good, old, new, field):
    """A pair block may leave its radial basis to its mirror block, but what it does state (core
    repulsion, inner cutoff) is its own: when that differs from the mirror's, the file is refused
    naming the field, as pyace refuses it, rather than silently taking the mirror's values."""
    pyace = pytest.importorskip("pyace")
    radial = ("nradmaxi", "lmaxi", "rcutij", "dcutij", "NameOfCutoffFunctionij", "nradbaseij", "radbase",
              "radparameters", "radcoefficients")
    head, sep, rest = open(good).read().partition("  - speciesblock: Al Cu\n")
    block, sep2, tail = rest.partition("  - speciesblock: ")
    lines = [ln for ln in block.splitlines(True) if ln.strip().split(":")[0] not in radial]
    assert len(lines) < len(block.splitlines()) and old in "".join(lines)
    path = write(tmp_path, "mirror.yaml", head + sep + "".join(lines).replace(old, new, 1) + sep2 + tail)
    expect_error(path, f"blocks 'Al Cu' and 'Cu Al' differ in {field}")
    with pytest.raises(Exception, match="not consistent|should be identical"):
        pyace.ACEBBasisSet(path)
    # and with the mirror's values the same file is read
    aceuq.Potential(write(tmp_path, "agree.yaml", head + sep + "".join(lines) + sep2 + tail))


def test_positions_and_types_of_different_lengths_are_refused(good):
    """The core's evaluate calls take positions (n, 3) and n types: positions with a row fewer
    (or more) than the types are refused with an error naming the expected shape, never read
    out of bounds; the same for the ensemble call."""
    pot = aceuq.Potential(good)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    types = pot.types_of(atoms)
    cell = np.ascontiguousarray(atoms.cell.array)
    members = [[np.ravel(pot._pot.coefficients(mu)).tolist() for mu in range(len(pot.elements))]]
    # the consistent calls work
    want = pot._ev.evaluate(atoms.positions, cell, [True] * 3, types)["energy"]
    assert pot._ev.evaluate_members(atoms.positions, cell, [True] * 3, types, members)["energy"][0] == \
        pytest.approx(want, rel=1e-12)
    for positions in (atoms.positions[:-1], np.vstack([atoms.positions, [[0.1, 0.2, 0.3]]]), atoms.positions[:, :2]):
        with pytest.raises(ValueError, match=r"positions must have shape \(n_atoms, 3\)"):
            pot._ev.evaluate(positions, cell, [True] * 3, types)
        with pytest.raises(ValueError, match=r"positions must have shape \(n_atoms, 3\)"):
            pot._ev.evaluate_members(positions, cell, [True] * 3, types, members)
    with pytest.raises(ValueError, match=r"positions must have shape"):
        pot._ev.evaluate(atoms.positions, cell, [True] * 3, types[:-1])
