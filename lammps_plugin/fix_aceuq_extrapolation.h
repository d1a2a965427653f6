/* fix ID group aceuq/extrapolation N lower L upper U file OUT.extxyz [cutout R] [append yes|no]
       [element El1 El2 ...]

   Every N steps asks pair_style aceuq for the per-atom extrapolation grade gamma. When the
   largest gamma of the group (over all ranks) exceeds L, the configuration (all atoms, not only
   the group's) is appended to OUT.extxyz with per-atom gamma, cluster, id and type (or, with
   `cutout R`, one spherical cut-out of all atoms within R around each group atom above L); when
   it exceeds U the run stops cleanly, naming the atom, and later runs are skipped until the fix
   is removed (as fix halt ... error soft; under rerun, which cannot stop early, it is only
   reported). A step is checked once, also across runs; under rerun, every snapshot; under minimize, every N-th
   iteration on the configuration it accepts.
   Global vector (thermo: f_ID[k]): [1] max gamma, [2] atoms above L (both of the last check),
   [3] frames and [4] cut-outs written so far. Atoms are written with the element pair_coeff
   gives their type, X for a type it maps to NULL, unless `element` names every type (as
   dump_modify element: the other sub-styles' atoms of a hybrid style). */
#ifndef LMP_FIX_ACEUQ_EXTRAPOLATION_H
#define LMP_FIX_ACEUQ_EXTRAPOLATION_H

#include "fix.h"

#include <map>
#include <optional>
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
  void setup_pre_force_respa(int, int) override;
  void pre_force_respa(int, int, int) override;
  void setup(int) override;
  void min_setup(int) override;
  void min_pre_force(int) override;
  void min_post_force(int) override;
  void post_run() override;
  void end_of_step() override;
  ~FixACEUQExtrapolation() override;
  double compute_vector(int) override;

 private:
  double lower, upper, cutout;
  std::string filename;
  class PairACEUQ *pair;
  double max_gamma;
  int n_above;
  int frames_written, cutouts_written;
  bool append_to_file;    // append yes: continue the file an earlier job wrote (as dump_modify append)
  bool file_started;
  double cutout_checked_against;    // the potential cutoff the cut-out radius was last checked
                                    // against (warned once for each, also after a new pair_coeff)
  bigint last_checked;    // the step checked last (a run that starts there does not check it again)
  bool halted;            // this fix stopped the run (and keeps later runs from starting)
  bool stop_reported;     // this run's stop was reported (a minimizer told to stop finishes its
                          // iteration, which may be checked and above U too: reported once)
  std::vector<std::string> type_names;    // element per atom type, when given

  // one graded step: what it writes (text on rank 0) and whether it stops the run
  struct Verdict {
    bigint step = -1;
    double max_gamma = 0.0;
    tagint atom = 0;    // the atom of max_gamma
    std::string text;
    int frames = 0, cutouts = 0;
  };
  std::optional<Verdict> pending;    // minimization: the last evaluation of the current iteration

  void request_gamma();
  bool under_rerun() const;
  bool setup_checks() const;
  std::string type_name(int itype) const;
  void check();
  Verdict grade_step();
  void commit(const Verdict &v);
  void commit_pending();
  void write_frame(const std::vector<int> &centres, Verdict &v);
  void check_cutout_fits(const std::string &when);
  // this rank's atoms in cells of the box (fractional coordinates) at least `cutout` wide: the
  // atoms within `cutout` of a point are in its cell and the adjacent ones
  struct CellBins {
    double rows[3][3], lo[3];    // fractional coordinates: rows . (x - lo)
    bool periodic[3];
    int n[3];                    // cells along each direction
    std::vector<int> head, next;    // per cell its first atom, per atom the next in its cell (-1: none)
    void cell_of(const double *p, int c[3]) const;
    template <class F> void for_each_near(const double *p, F &&visit) const;
  };
  CellBins bin_local_atoms() const;
  // instances of this fix that have stopped the runs, per LAMMPS instance
  static std::map<const LAMMPS *, int> &halted_instances();
  void append(const std::string &text);
  std::string write_file(const std::string &text, bool start);
  std::string clash_with_inputs() const;
};

}    // namespace LAMMPS_NS

#endif
