/* fix aceuq/extrapolation: extrapolation-triggered dumps and halts for pair_style aceuq.
   The fix does no numerics: gamma comes from the pair style (the aceuq Grader); the fix decides
   when to ask for it, gathers what is above the thresholds to rank 0 and writes extended XYZ. */

#include "fix_aceuq_extrapolation.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "input.h"
#include "modify.h"
#include "pair_aceuq.h"
#include "platform.h"
#include "timer.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {
// x with `digits` significant digits, always with a decimal point or exponent (5.0, not 5):
// extxyz readers (ASE) type a value by its text
std::string real_text(double x, int digits)
{
  std::ostringstream s;
  s.precision(digits);
  s << x;
  std::string t = s.str();
  if (t.find_first_of(".eEn") == std::string::npos) t += ".0";
  return t;
}

// One atom as gathered to rank 0: [tag, type, x, y, z, gamma, cluster, centre]
constexpr int kRecord = 8;

// the names the frames may carry: what ASE and DFT codes read
bool is_element_symbol(const std::string &s)
{
  static const char *const kSymbols[] = {
      "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",  "S",  "Cl", "Ar",
      "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
      "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe",
      "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf",
      "Ta", "W",  "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
      "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs",
      "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
  for (const char *el : kSymbols)
    if (s == el) return true;
  return false;
}
}    // namespace

FixACEUQExtrapolation::FixACEUQExtrapolation(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), lower(0), upper(0), cutout(0), pair(nullptr), max_gamma(0), n_above(0),
    frames_written(0), cutouts_written(0), append_to_file(false), file_started(false), cutout_checked_against(-1.0),
    last_checked(-1), halted(false), stop_reported(false)
{
  if (narg < 4)
    error->all(FLERR, "Illegal fix aceuq/extrapolation command: expected "
                      "fix ID group aceuq/extrapolation N lower L upper U file OUT.extxyz [cutout R] "
                      "[append yes|no] [element El1 El2 ... (one per atom type)]");
  nevery = utils::inumeric(FLERR, arg[3], false, lmp);
  if (nevery <= 0) error->all(FLERR, "fix aceuq/extrapolation: N must be > 0");
  bool have_lower = false, have_upper = false;
  for (int iarg = 4; iarg < narg; iarg += 2) {
    if (iarg + 1 >= narg) error->all(FLERR, "fix aceuq/extrapolation: keyword {} needs a value", arg[iarg]);
    const std::string key = arg[iarg];
    if (key == "element") {    // as dump_modify element: a name for every atom type
      if (!type_names.empty()) error->all(FLERR, "fix aceuq/extrapolation: element given twice");
      if (iarg + atom->ntypes >= narg)
        error->all(FLERR, "fix aceuq/extrapolation: element needs {} names, one per atom type", atom->ntypes);
      type_names.assign(arg + iarg + 1, arg + iarg + 1 + atom->ntypes);
      for (const auto &el : type_names)
        if (!is_element_symbol(el))
          error->all(FLERR, "fix aceuq/extrapolation: '{}' is not an element symbol", el);
      iarg += atom->ntypes - 1;
      // a name more than there are atom types, not a keyword that follows
      if (iarg + 2 < narg && is_element_symbol(arg[iarg + 2]))
        error->all(FLERR, "fix aceuq/extrapolation: element takes {} name{}, one per atom type; '{}' is one more",
                   atom->ntypes, atom->ntypes == 1 ? "" : "s", arg[iarg + 2]);
      continue;
    }
    if (key == "lower") {
      lower = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      have_lower = true;
    } else if (key == "upper") {
      upper = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      have_upper = true;
    } else if (key == "file") {
      // made absolute now: the file is opened again at every write, and a later `shell cd` must
      // not move the rest of the frames elsewhere (a dump keeps its file open)
      filename = arg[iarg + 1];
      if (!filename.empty() && filename[0] != '/')
        filename = platform::path_join(platform::current_directory(), filename);
    } else if (key == "append") {
      append_to_file = utils::logical(FLERR, arg[iarg + 1], false, lmp) == 1;
    } else if (key == "cutout") {
      cutout = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (cutout <= 0) error->all(FLERR, "fix aceuq/extrapolation: cutout radius must be > 0");
    } else {
      error->all(FLERR, "fix aceuq/extrapolation: unknown keyword {}", key);
    }
  }
  if (!have_lower || !have_upper || filename.empty())
    error->all(FLERR, "fix aceuq/extrapolation: lower, upper and file are required");
  if (lower <= 0 || upper < lower)
    error->all(FLERR, "fix aceuq/extrapolation: need 0 < lower <= upper (got lower {} upper {})", lower, upper);

  vector_flag = 1;
  size_vector = 4;
  global_freq = nevery;
  extvector = 0;
}

FixACEUQExtrapolation::~FixACEUQExtrapolation()
{
  // unfix: runs may go on, unless another instance has halted them too (counted per LAMMPS
  // instance: when LAMMPS ends, the other fixes may already be deleted, so they are not asked)
  if (halted && --halted_instances()[lmp] == 0) timer->reset_timeout();
}

std::map<const LAMMPS *, int> &FixACEUQExtrapolation::halted_instances()
{
  static std::map<const LAMMPS *, int> count;
  return count;
}

int FixACEUQExtrapolation::setmask()
{
  return PRE_FORCE | PRE_FORCE_RESPA | END_OF_STEP | MIN_PRE_FORCE | MIN_POST_FORCE;
}

void FixACEUQExtrapolation::init()
{
  pair = dynamic_cast<PairACEUQ *>(force->pair_match("aceuq", 1));
  if (!pair)
    error->all(FLERR, "fix aceuq/extrapolation requires pair_style aceuq (alone, or as one sub-style of a "
                      "hybrid style, not two)");
  if (!pair->compute_flag || !force->pair->compute_flag)    // the sub-style, or a hybrid style as a whole
    error->all(FLERR, "fix aceuq/extrapolation: pair_modify compute no: pair_style aceuq computes no gamma (and "
                      "the fix would report that of the last step it computed)");
  if (!pair->has_active_set())
    error->all(FLERR, "fix aceuq/extrapolation: pair_coeff gave no active set (.asi or .casi): gamma is undefined");
  if (!type_names.empty()) {    // one per type (the constructor took exactly that many)
    for (int t = 1; t <= atom->ntypes; ++t) {
      const std::string mapped = pair->type_element(t);
      if (mapped != "X" && mapped != type_names[t - 1])
        error->all(FLERR, "fix aceuq/extrapolation: element names type {} {}, but pair_coeff maps it to {}", t,
                   type_names[t - 1], mapped);
    }
  }
  // fixes that change the box (and remap atoms) at the end of a step, when they come first, have
  // done so before this fix writes its frames: positions no longer those gamma was computed at
  if (comm->me == 0)
    for (Fix *f : modify->get_fix_list()) {
      if (f == this) break;
      if (utils::strmatch(f->style, "^deform") || utils::strmatch(f->style, "^press/berendsen"))
        error->warning(FLERR, "fix aceuq/extrapolation: fix {} ({}) is defined before it and changes the box at "
                       "the end of each step, before frames are written: their positions and cell will not be "
                       "those gamma was computed at; define fix aceuq/extrapolation first", f->id, f->style);
    }
  if (!atom->tag_enable)
    error->all(FLERR, "fix aceuq/extrapolation requires atom IDs (not 'atom_modify id no'): frames are "
                      "ordered, and cut-outs centred, by atom ID");
  if (cutout > 0) {
    check_cutout_fits("");
    const double cutoff = pair->largest_cutoff();    // a hybrid sub-style's cutforce stays 0
    if (cutout < cutoff && cutoff != cutout_checked_against && comm->me == 0)
      error->warning(FLERR, "fix aceuq/extrapolation: cutout radius {} is below the potential's cutoff {}: a "
                     "cut-out's centre atom lacks neighbours it has in the simulation (its gamma there differs); "
                     "use cutout >= {}", cutout, cutoff, cutoff);
    cutout_checked_against = cutoff;
  }
  // a new file, as a dump starts one (or, with append yes, the file continued): found unwritable
  // now, not at the first frame
  if (!file_started) {
    std::string why;
    if (comm->me == 0) {
      why = clash_with_inputs();
      if (why.empty()) why = write_file("", !append_to_file);
    }
    int n = int(why.size());
    MPI_Bcast(&n, 1, MPI_INT, 0, world);
    if (n) {    // the reason on every rank (each one's exception, through the library interface, says it)
      why.resize(n);
      MPI_Bcast(&why[0], n, MPI_CHAR, 0, world);
      error->all(FLERR, "fix aceuq/extrapolation: {}", why);
    }
    file_started = true;
  }
}

// Why the frames file must not be written (it is a file pair_coeff read: frames written there would
// replace the potential or the active set), or "".
std::string FixACEUQExtrapolation::clash_with_inputs() const
{
  struct stat out;
  if (::stat(filename.c_str(), &out) != 0) return "";    // not there yet: no clash
  const auto &files = pair->input_files();
  for (std::size_t k = 0; k < files.size(); ++k) {
    struct stat in;
    if (::stat(files[k].c_str(), &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
      return fmt::format("file {} is the {} pair_coeff read ('{}'): frames written there would replace it",
                         filename, k == 0 ? "potential" : "active set", files[k]);
  }
  return "";
}

// the element written for an atom type: the fix's element names if given, else pair_coeff's (X
// for a type pair_coeff maps to NULL)
std::string FixACEUQExtrapolation::type_name(int itype) const
{
  if (!type_names.empty() && itype >= 1 && itype <= int(type_names.size())) return type_names[itype - 1];
  return pair->type_element(itype);
}

void FixACEUQExtrapolation::request_gamma()
{
  int dim = 0;
  auto *flag = static_cast<int *>(pair->extract("gamma_flag", dim));
  if (flag) *flag = 1;
}

// Under rerun every setup is a new snapshot, even at the step checked last (structures graded
// one by one, each written at step 0); in runs, the step a run starts at was checked by the run
// that ended there.
bool FixACEUQExtrapolation::under_rerun() const
{
  return input->command && strcmp(input->command, "rerun") == 0;
}

bool FixACEUQExtrapolation::setup_checks() const
{
  return update->ntimestep % nevery == 0 && (update->ntimestep != last_checked || under_rerun());
}

void FixACEUQExtrapolation::setup_pre_force(int)
{
  if (setup_checks()) request_gamma();
}

void FixACEUQExtrapolation::pre_force(int)
{
  // called after the step counter advanced: this is the step whose forces come next
  if (update->ntimestep % nevery == 0) request_gamma();
}

// run_style respa calls these at every level instead of the two above: ask at each, so the pair
// style grades at whichever level it computes
void FixACEUQExtrapolation::setup_pre_force_respa(int vflag, int)
{
  setup_pre_force(vflag);
}

void FixACEUQExtrapolation::pre_force_respa(int vflag, int, int)
{
  pre_force(vflag);
}

void FixACEUQExtrapolation::setup(int)
{
  stop_reported = false;
  // the last step of the previous run, where this one starts, was checked then (as a dump
  // writes a step once)
  if (setup_checks()) check();
}

// Minimization: an iteration's line search evaluates trial configurations and ends on the one it
// accepts, but no fix is called at the end of an iteration. So each evaluation of a checked
// iteration is graded, the last one is kept, and it is committed (written, and the minimizer
// stopped above U, after the next iteration) once the next iteration starts or the minimization
// ends: the configurations a dump would write.
void FixACEUQExtrapolation::min_setup(int vflag)
{
  pending.reset();
  setup(vflag);    // the starting configuration is checked as a run's first step
}

// (A minimization that stops early evaluates its last configuration once more: a step already
// committed, at the start of a stopped minimization, is not graded again.)
void FixACEUQExtrapolation::min_pre_force(int)
{
  if (pending && pending->step != update->ntimestep) commit_pending();
  if (update->ntimestep % nevery == 0 && update->ntimestep != last_checked) request_gamma();
}

void FixACEUQExtrapolation::min_post_force(int)
{
  if (update->ntimestep % nevery == 0 && update->ntimestep != last_checked) pending = grade_step();
}

void FixACEUQExtrapolation::post_run()
{
  if (pending) commit_pending();
}

void FixACEUQExtrapolation::commit_pending()
{
  const Verdict v = std::move(*pending);
  pending.reset();
  commit(v);
}

void FixACEUQExtrapolation::end_of_step()
{
  // rerun calls setup() and then end_of_step() for each snapshot: one check each
  if (update->ntimestep != last_checked) check();
}

double FixACEUQExtrapolation::compute_vector(int i)
{
  switch (i) {
    case 0: return max_gamma;
    case 1: return double(n_above);
    case 2: return double(frames_written);
    default: return double(cutouts_written);
  }
}

void FixACEUQExtrapolation::check()
{
  commit(grade_step());
}

// The step's gamma over all ranks, and (rank 0) the text of its frame or cut-outs: collective.
FixACEUQExtrapolation::Verdict FixACEUQExtrapolation::grade_step()
{
  Verdict v;
  v.step = update->ntimestep;
  int ncols = 0;
  const double *gamma = static_cast<double *>(pair->extract_peratom("gamma", ncols));
  int dim = 0;
  auto *flag = static_cast<int *>(pair->extract("gamma_flag", dim));
  if (flag) *flag = 0;
  if (!gamma) error->all(FLERR, "fix aceuq/extrapolation: pair_style aceuq returned no gamma");

  const int nlocal = atom->nlocal;
  const int *mask = atom->mask;
  const tagint *tag = atom->tag;
  double local_max[2] = {-1.0, 0.0};    // gamma, tag of the atom
  int local_above = 0;
  std::vector<int> above;    // local indices above the lower threshold
  for (int i = 0; i < nlocal; ++i) {
    if (!(mask[i] & groupbit)) continue;
    if (gamma[i] > local_max[0] || (gamma[i] == local_max[0] && double(tag[i]) < local_max[1])) {
      local_max[0] = gamma[i];
      local_max[1] = double(tag[i]);
    }
    if (gamma[i] > lower) {
      ++local_above;
      above.push_back(i);
    }
  }
  std::vector<double> all_max(2 * comm->nprocs);
  MPI_Allgather(local_max, 2, MPI_DOUBLE, all_max.data(), 2, MPI_DOUBLE, world);
  double gmax = -1.0, gtag = 0.0;
  for (int r = 0; r < comm->nprocs; ++r) {
    const double g = all_max[2 * r], t = all_max[2 * r + 1];
    if (g > gmax || (g == gmax && t < gtag)) {
      gmax = g;
      gtag = t;
    }
  }
  MPI_Allreduce(&local_above, &n_above, 1, MPI_INT, MPI_SUM, world);
  max_gamma = v.max_gamma = std::max(gmax, 0.0);
  v.atom = (tagint) gtag;
  if (v.max_gamma > lower) {
    write_frame(above, v);
    // rank 0 wrote the text; every rank reports the same counts (f_ID[3], f_ID[4] in an input
    // script's `if` must not differ between ranks)
    int written[2] = {v.frames, v.cutouts};
    MPI_Bcast(written, 2, MPI_INT, 0, world);
    v.frames = written[0];
    v.cutouts = written[1];
  }
  return v;
}

// What a graded step leads to: its frames appended, and a stop above the upper threshold.
void FixACEUQExtrapolation::commit(const Verdict &v)
{
  last_checked = v.step;
  if (!v.text.empty()) append(v.text);
  frames_written += v.frames;
  cutouts_written += v.cutouts;
  if (v.max_gamma > upper) {
    // rerun reads every snapshot whatever the timer says (fix halt cannot stop it either): there
    // the snapshot is reported, and nothing is stopped or skipped
    const bool rerun = under_rerun();
    if (comm->me == 0 && (rerun || !stop_reported))
      utils::logmesg(lmp, "fix aceuq/extrapolation: step {} atom {} has gamma {:.4g} > upper {}: {}\n", v.step,
                     v.atom, v.max_gamma, upper,
                     rerun ? "rerun does not stop early, every snapshot is checked"
                           : fmt::format("stopping the run (later runs are skipped while fix {} is defined)", id));
    if (!rerun) {
      stop_reported = true;
      timer->force_timeout();
      if (!halted) ++halted_instances()[lmp];
      halted = true;
    }
  }
}

// A cut-out holds each atom once (minimum image): its radius must stay within half the periodic
// box, also when the box shrinks during a run (fix npt, fix deform); `when` says which case.
void FixACEUQExtrapolation::check_cutout_fits(const std::string &when)
{
  for (int d = 0; d < 3; ++d) {
    const double len = d == 0 ? domain->xprd : (d == 1 ? domain->yprd : domain->zprd);
    if (domain->periodicity[d] && 2.0 * cutout > len)
      error->all(FLERR, "fix aceuq/extrapolation: cutout radius {} exceeds half the periodic box length along "
                 "{} ({} of {}){}", cutout, "xyz"[d], 0.5 * len, len, when);
  }
}

// Cells of the box in fractional coordinates, at least `cutout` wide in every direction (fewer,
// wider cells when there would be more cells than local atoms), holding this rank's atoms.
FixACEUQExtrapolation::CellBins FixACEUQExtrapolation::bin_local_atoms() const
{
  CellBins b;
  const double *hi = domain->h_inv;    // fractional = h_inv (x - boxlo), h_inv upper triangular
  const double rows[3][3] = {{hi[0], hi[5], hi[4]}, {0.0, hi[1], hi[3]}, {0.0, 0.0, hi[2]}};
  for (int d = 0; d < 3; ++d) {
    for (int k = 0; k < 3; ++k) b.rows[d][k] = rows[d][k];
    b.lo[d] = domain->boxlo[d];
    b.periodic[d] = domain->periodicity[d] != 0;
    const double width = 1.0 / std::sqrt(rows[d][0] * rows[d][0] + rows[d][1] * rows[d][1] + rows[d][2] * rows[d][2]);
    b.n[d] = std::max(1, int(std::min(width / cutout, 1e6)));
  }
  const long long most = 2LL * atom->nlocal + 27;
  while ((long long) b.n[0] * b.n[1] * b.n[2] > most) {
    int *widest = std::max_element(b.n, b.n + 3);
    *widest = std::max(1, *widest / 2);
  }
  b.head.assign((size_t) b.n[0] * b.n[1] * b.n[2], -1);
  b.next.assign(atom->nlocal, -1);
  double **x = atom->x;
  for (int i = 0; i < atom->nlocal; ++i) {
    int c[3];
    b.cell_of(x[i], c);
    const size_t k = ((size_t) c[0] * b.n[1] + c[1]) * b.n[2] + c[2];
    b.next[i] = b.head[k];
    b.head[k] = i;
  }
  return b;
}

void FixACEUQExtrapolation::CellBins::cell_of(const double *p, int c[3]) const
{
  for (int d = 0; d < 3; ++d) {
    const double s = rows[d][0] * (p[0] - lo[0]) + rows[d][1] * (p[1] - lo[1]) + rows[d][2] * (p[2] - lo[2]);
    // atoms outside the box: wrapped where periodic, in the edge cells where not
    long long k = (long long) std::floor(std::max(-1e9, std::min(1e9, s * n[d])));
    if (periodic[d])
      k = ((k % n[d]) + n[d]) % n[d];
    else
      k = std::max(0LL, std::min((long long) n[d] - 1, k));
    c[d] = int(k);
  }
}

template <class F> void FixACEUQExtrapolation::CellBins::for_each_near(const double *p, F &&visit) const
{
  int c[3];
  cell_of(p, c);
  std::vector<int> near[3];    // the distinct cells at offsets -1, 0, 1 along each direction
  for (int d = 0; d < 3; ++d)
    for (int o = -1; o <= 1; ++o) {
      int k = c[d] + o;
      if (periodic[d])
        k = (k + n[d]) % n[d];
      else if (k < 0 || k >= n[d])
        continue;
      if (std::find(near[d].begin(), near[d].end(), k) == near[d].end()) near[d].push_back(k);
    }
  for (int a : near[0])
    for (int b : near[1])
      for (int e : near[2])
        for (int i = head[((size_t) a * n[1] + b) * n[2] + e]; i >= 0; i = next[i]) visit(i);
}

void FixACEUQExtrapolation::write_frame(const std::vector<int> &above_local, Verdict &v)
{
  // (every rank gets here: the verdict is global)
  if (cutout > 0)
    check_cutout_fits(" at step " + std::to_string(update->ntimestep) + ": the box shrank during the run");
  int ncols = 0;
  const double *gamma = static_cast<double *>(pair->extract_peratom("gamma", ncols));
  const double *cluster = static_cast<double *>(pair->extract_peratom("cluster", ncols));
  double **x = atom->x;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;

  std::vector<double> mine;
  auto pack = [&](int i, const double *pos, double centre) {
    mine.insert(mine.end(), {double(tag[i]), double(type[i]), pos[0], pos[1], pos[2], gamma[i], cluster[i], centre});
  };

  std::vector<double> centres;    // per centre: tag, x, y, z, gamma (sorted by tag, same on all ranks)
  if (cutout > 0) {
    std::vector<double> local_centres;
    for (int i : above_local)
      local_centres.insert(local_centres.end(), {double(tag[i]), x[i][0], x[i][1], x[i][2], gamma[i]});
    int n = int(local_centres.size());
    std::vector<int> counts(comm->nprocs), displs(comm->nprocs);
    MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, world);
    int total = 0;
    for (int r = 0; r < comm->nprocs; ++r) {
      displs[r] = total;
      total += counts[r];
    }
    centres.resize(total);
    MPI_Allgatherv(local_centres.data(), n, MPI_DOUBLE, centres.data(), counts.data(), displs.data(), MPI_DOUBLE,
                   world);
    const int nc = total / 5;
    {    // by atom id, whatever the decomposition
      std::vector<int> idx(nc);
      for (int c = 0; c < nc; ++c) idx[c] = c;
      std::sort(idx.begin(), idx.end(), [&](int a, int b) { return centres[5 * a] < centres[5 * b]; });
      std::vector<double> sorted(centres.size());
      for (int c = 0; c < nc; ++c) std::copy_n(&centres[5 * idx[c]], 5, &sorted[5 * c]);
      centres.swap(sorted);
    }
    // every atom near a centre, in the group or not: the local atoms binned in cells at least R
    // wide (between opposite faces), so a centre looks at the atoms of its cell and the adjacent
    // ones, not at every atom (a million-atom run has many centres)
    const CellBins bins = bin_local_atoms();
    for (int c = 0; c < nc; ++c)
      bins.for_each_near(&centres[5 * c + 1], [&](int i) {
        double d[3] = {x[i][0] - centres[5 * c + 1], x[i][1] - centres[5 * c + 2], x[i][2] - centres[5 * c + 3]};
        domain->minimum_image(FLERR, d[0], d[1], d[2]);
        if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= cutout * cutout) pack(i, d, centres[5 * c]);
      });
  } else {
    for (int i = 0; i < nlocal; ++i) {    // the whole configuration (the group decides only when)
      double p[3] = {x[i][0] - domain->boxlo[0], x[i][1] - domain->boxlo[1], x[i][2] - domain->boxlo[2]};
      pack(i, p, -1.0);
    }
  }

  int n = int(mine.size());
  std::vector<int> counts(comm->nprocs), displs(comm->nprocs);
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  int total = 0;
  if (comm->me == 0)
    for (int r = 0; r < comm->nprocs; ++r) {
      displs[r] = total;
      total += counts[r];
    }
  std::vector<double> all(comm->me == 0 ? total : 0);
  MPI_Gatherv(mine.data(), n, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, 0, world);
  if (comm->me != 0) return;

  // Order by (centre, tag) so that the file does not depend on the domain decomposition.
  const int na = total / kRecord;
  std::vector<int> order(na);
  for (int k = 0; k < na; ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const double *ra = &all[kRecord * a], *rb = &all[kRecord * b];
    return ra[7] != rb[7] ? ra[7] < rb[7] : ra[0] < rb[0];
  });

  std::ostringstream out;
  out.precision(10);
  auto header = [&](int count, const std::string &extra, bool periodic) {
    out << count << "\n";
    if (periodic) {
      const double *h = domain->h;    // xprd yprd zprd yz xz xy
      out << "Lattice=\"" << h[0] << " 0 0 " << h[5] << " " << h[1] << " 0 " << h[4] << " " << h[3] << " " << h[2]
          << "\" ";
    }
    out << "Properties=species:S:1:pos:R:3:gamma:R:1:cluster:I:1:id:I:1:type:I:1 pbc=\""
        << (periodic && domain->xperiodic ? "T" : "F") << " " << (periodic && domain->yperiodic ? "T" : "F") << " "
        << (periodic && domain->zperiodic ? "T" : "F") << "\" step=" << update->ntimestep << extra << "\n";
  };
  auto line = [&](const double *r) {
    out << type_name(int(r[1])) << " " << r[2] << " " << r[3] << " " << r[4] << " " << r[5] << " "
        << int(r[6]) << " " << (tagint) r[0] << " " << int(r[1]) << "\n";
  };
  if (cutout > 0) {
    int k = 0;
    const int nc = int(centres.size()) / 5;
    for (int c = 0; c < nc; ++c) {
      int start = k;
      while (k < na && all[kRecord * order[k] + 7] == centres[5 * c]) ++k;
      std::ostringstream extra;
      extra.precision(10);
      extra << " centre_id=" << (tagint) centres[5 * c] << " centre_gamma=" << centres[5 * c + 4]
            << " max_gamma=" << v.max_gamma << " cutout_radius=" << real_text(cutout, 10);
      header(k - start, extra.str(), false);
      for (int q = start; q < k; ++q) line(&all[kRecord * order[q]]);
      ++v.cutouts;
    }
  } else {
    std::ostringstream extra;
    extra.precision(10);
    extra << " max_gamma=" << v.max_gamma;
    header(na, extra.str(), true);
    for (int q = 0; q < na; ++q) line(&all[kRecord * order[q]]);
    ++v.frames;
  }
  v.text = out.str();
}

// The file is started empty when the fix's first run starts, as a dump starts its file (with
// append yes, continued), and each check that extrapolates appends its frames in place, in one write. Rewriting the file through a
// temporary file and a rename at every append would copy all earlier frames each time: quadratic
// over a long run that writes many frames or cut-outs. In place, the file grows by what is new,
// and a reader following it (tail -f) keeps following. A write that fails (disk full) is cut back
// to the length before it, so the file still ends with a whole frame.
void FixACEUQExtrapolation::append(const std::string &text)
{
  const std::string why = write_file(text, false);
  if (!why.empty()) error->one(FLERR, "fix aceuq/extrapolation: {}", why);
}

// Writes text to the file (start: as its whole content; else after what it holds); returns why
// that failed, or an empty string.
std::string FixACEUQExtrapolation::write_file(const std::string &text, bool start)
{
  const int fd = ::open(filename.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (start ? O_TRUNC : O_APPEND), 0666);
  if (fd < 0) return fmt::format("cannot write {}: {}", filename, std::strerror(errno));
  const off_t before = ::lseek(fd, 0, SEEK_END);
  std::string why;
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      why = fmt::format("writing {} failed: {}", filename, n < 0 ? std::strerror(errno) : "nothing written");
      if (before >= 0 && ::ftruncate(fd, before) == 0)
        why += " (the frames written before are kept, whole)";
      break;
    }
    done += size_t(n);
  }
  if (::close(fd) != 0 && why.empty())
    why = fmt::format("writing {} failed: {}", filename, std::strerror(errno));
  return why;
}
