"""ASE calculator backed by the aceuq C++ evaluator: one potential, or an ensemble with its σ."""
from __future__ import annotations

import os
from typing import Optional

from ase.calculators.calculator import Calculator, all_changes

from .potential import Potential

SINGLE_PROPERTIES = ["energy", "free_energy", "energies", "forces", "stress"]
GAMMA_PROPERTIES = ["gamma", "cluster"]
ENSEMBLE_PROPERTIES = ["energy", "free_energy", "energies", "forces", "stress", "energy_std", "energies_std",
                       "forces_std", "force_uncertainty", "stress_std"]


def _is_ensemble(source) -> bool:
    from .ensemble import MANIFEST, Ensemble

    if isinstance(source, Ensemble):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return os.path.isdir(path) or os.path.basename(path) == MANIFEST
    return isinstance(source, (list, tuple))


class ACECalculator(Calculator):
    """ASE calculator for pacemaker ``.yaml`` ACE potentials, single or as an ensemble.

    >>> atoms.calc = ACECalculator("output_potential.yaml")
    >>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

    Given an ensemble (a directory written by ``aceuq ensemble``, its ``ensemble.json``, a list
    of member ``.yaml`` files or an :class:`aceuq.ensemble.Ensemble`), the results are the
    members' means (stress too) plus their spread under pyace's ``PyACEEnsembleCalculator`` names:
    ``energy_std``, ``energies_std``, ``forces_std`` (calibrated if the manifest has a
    calibration, unless ``calibrated=False``) and ``force_uncertainty`` (per atom, see
    :mod:`aceuq.ensemble`):

    >>> atoms.calc = ACECalculator("ens_dir")
    >>> atoms.get_forces(); atoms.calc.results["forces_std"]

    With an active set (``.asi``/``.casi`` path or :class:`aceuq.activeset.ActiveSet`) of a single
    potential, every calculation also grades the atoms, from the same evaluation: per-atom
    ``gamma`` and ``cluster`` in ``results`` (as pyace's ``PyACECalculator.set_active_set``);
    ``assign`` overrides the ``.casi``'s cluster assignment:

    >>> atoms.calc = ACECalculator("output_potential.yaml", active_set="train.casi")
    >>> atoms.get_forces(); atoms.calc.results["gamma"].max()
    """

    implemented_properties = SINGLE_PROPERTIES

    def __init__(self, potential, calibrated: bool = True, active_set=None, assign: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.potential = self.ensemble = self.active_set = None
        if assign is not None and active_set is None:
            raise ValueError("assign: the cluster assignment of an active set; give active_set too")
        if _is_ensemble(potential):
            from .ensemble import Ensemble

            if active_set is not None:
                raise ValueError("active_set: gamma is graded for a single potential, not an ensemble")
            self.ensemble = potential if isinstance(potential, Ensemble) else Ensemble.load(potential)
            self.calibrated = calibrated
            self.implemented_properties = ENSEMBLE_PROPERTIES
        else:
            self.potential = potential if isinstance(potential, Potential) else Potential(potential)
            if active_set is not None:
                from .activeset import ActiveSet

                if isinstance(active_set, ActiveSet):
                    active_set.check_potential(self.potential)
                    if assign is not None:
                        raise ValueError("assign: set it on the ActiveSet given (active_set.assign)")
                    self.active_set = active_set
                else:
                    self.active_set = ActiveSet.load(active_set, self.potential, assign=assign)
                self.implemented_properties = SINGLE_PROPERTIES + GAMMA_PROPERTIES

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        # results of this structure only (a direct calculate() call keeps no earlier stress)
        self.results = {}
        if self.ensemble is not None:
            r = self.ensemble.evaluate(self.atoms, forces=True, calibrated=self.calibrated)
            self.results.update(energy=r.energy, free_energy=r.energy, energies=r.energies, forces=r.forces,
                                energy_std=r.energy_std, energies_std=r.energies_std, forces_std=r.forces_std,
                                force_uncertainty=r.force_uncertainty)
            if r.stress is not None:
                self.results.update(stress=r.stress, stress_std=r.stress_std)
            return
        mode = self.active_set.mode if self.active_set is not None else None
        res = self.potential.evaluate(self.atoms, forces=True, projections=mode)
        if self.active_set is not None:
            self.active_set.check_potential(self.potential)
            gamma, cluster = self.active_set.grade_rows(self.atoms.get_chemical_symbols(), res.projections)
            self.results.update(gamma=gamma, cluster=cluster)
        self.results["energy"] = res.energy
        self.results["free_energy"] = res.energy
        self.results["energies"] = res.energies
        self.results["forces"] = res.forces
        if res.stress is not None:
            self.results["stress"] = res.stress
