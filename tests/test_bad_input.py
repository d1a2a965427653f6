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
    with pytest.raises(ValueError, match="too close"):
        pot.evaluate(atoms)


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
