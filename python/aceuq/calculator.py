"""ASE calculator backed by the aceuq C++ evaluator."""
from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from .potential import Potential


class ACECalculator(Calculator):
    """ASE calculator for pacemaker ``.yaml`` ACE potentials.

    >>> atoms.calc = ACECalculator("output_potential.yaml")
    >>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential if isinstance(potential, Potential) else Potential(potential)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.potential.evaluate(self.atoms, forces=True)
        self.results["energy"] = res.energy
        self.results["free_energy"] = res.energy
        self.results["energies"] = res.energies
        self.results["forces"] = res.forces
        if res.stress is not None:
            self.results["stress"] = res.stress
