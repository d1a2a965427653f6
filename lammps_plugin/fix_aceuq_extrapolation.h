/* fix ID group aceuq/extrapolation N lower L upper U file OUT.extxyz [cutout R]

   Every N steps asks pair_style aceuq for the per-atom extrapolation grade gamma. When the
   largest gamma of the group (over all ranks) exceeds L, the configuration is appended to
   OUT.extxyz with per-atom gamma and cluster (or, with `cutout R`, one spherical cut-out of
   radius R around each atom above L); when it exceeds U the run stops cleanly, naming the atom.
   Global vector (thermo: f_ID[k]): [1] max gamma, [2] atoms above L (both of the last check),
   [3] frames and [4] cut-outs written so far. */
#ifndef LMP_FIX_ACEUQ_EXTRAPOLATION_H
#define LMP_FIX_ACEUQ_EXTRAPOLATION_H

#include "fix.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class FixACEUQExtrapolation : public Fix {
 public:
  FixACEUQExtrapolation(class LAMMPS *, int, char **);

  int setmask() override;
  void init() override;
  void setup_pre_force(int) override;
  void pre_force(int) override;
  void setup(int) override;
  void end_of_step() override;
  double compute_vector(int) override;

 private:
  double lower, upper, cutout;
  std::string filename;
  class PairACEUQ *pair;
  double max_gamma;
  int n_above;
  int frames_written, cutouts_written;
  bool file_started;

  void request_gamma();
  void check();
  void write_frame(const std::vector<int> &centres);
  void append_atomically(const std::string &text);
  std::string write_atomically(const std::string &text);
};

}    // namespace LAMMPS_NS

#endif
