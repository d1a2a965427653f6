/* pair_style aceuq: a pacemaker ACE potential evaluated by the aceuq core, with the per-atom
   extrapolation grade gamma and cluster id (global .asi or clustered .casi active set).

     pair_style aceuq [assign nearest|min]
     pair_coeff * * potential.yaml [activeset.asi|activeset.casi] El1 El2 ... (NULL: type not handled)
     fix ID all pair N aceuq gamma 1 [cluster 0]

   The numerics live in the aceuq core; this class only maps LAMMPS atoms and neighbour lists onto
   it and tallies what it returns. */
#ifndef LMP_PAIR_ACEUQ_H
#define LMP_PAIR_ACEUQ_H

#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairACEUQ : public Pair {
 public:
  PairACEUQ(class LAMMPS *);
  ~PairACEUQ() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  double memory_usage() override;

  // for fix aceuq/extrapolation
  bool has_active_set() const;
  const char *type_element(int itype) const;    // element symbol of a LAMMPS atom type
  double largest_cutoff() const;                 // over the pairs of types pair_coeff maps (also in a hybrid)
  const std::vector<std::string> &input_files() const;    // the potential and active set pair_coeff read

 private:
  double type_pair_cutoff(int i, int j) const;
  struct Core;    // the aceuq objects and scratch space (defined in pair_aceuq.cpp)
  Core *core;

  int gamma_flag;       // set by fix pair on steps where gamma is wanted
  int reverse_virial;   // newton pair off: the reverse communication also carries per-atom virials
  // wall seconds this rank spent in compute() and, of those, in grading (extract "pair_seconds",
  // "gamma_seconds"): what asking for gamma costs, measured on the same steps
  double pair_seconds, gamma_seconds;
  int nmax_peratom;
  double *gamma;        // per atom (local), valid after a compute with gamma_flag set
  double *cluster;      // per atom: cluster index of the atom's active set, -1 if not graded

  void allocate();
  void grow_peratom();
  void compute_gamma();
  void check_units();
};

}    // namespace LAMMPS_NS

#endif
