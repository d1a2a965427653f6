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
