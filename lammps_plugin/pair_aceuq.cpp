/* pair_style aceuq: LAMMPS glue over the aceuq core (Potential, AtomEvaluator, Grader).

   Forces: the core returns dE_i/d(r_j - r_i) for every neighbour j of a local atom i; with a full
   neighbour list each such term is computed once, on i's owner, and acts on i and on j (j often a
   ghost). The ghost forces reach their owners through LAMMPS's reverse communication with newton
   pair on, and through this pair style's own (reverse_comm(this)) with newton pair off, where
   LAMMPS neither clears ghost forces nor sends them back. Virial: global by F.r over local+ghost
   atoms (fdotr) with newton on, summed term by term with newton off; per atom by splitting each
   term between i and j (the ghost halves sent back as the forces are). */

#include "pair_aceuq.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"

#include "aceuq/evaluator.hpp"
#include "aceuq/grader.hpp"
#include "aceuq/potential.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

struct PairACEUQ::Core {
  std::shared_ptr<aceuq::Potential> potential;
  std::unique_ptr<aceuq::AtomEvaluator> evaluator;
  std::shared_ptr<aceuq::Grader> grader;
  aceuq::Assign assign = aceuq::Assign::Nearest;
  bool assign_given = false;    // pair_style ... assign X overrides what a .casi file says
  aceuq::Assign file_assign = aceuq::Assign::Nearest;    // what it says
  std::vector<double> rcutsq;    // [mu_i * nel + mu_j]
  std::vector<std::string> files;    // what pair_coeff read: the potential, and the active set if any

  // scratch for one central atom
  std::vector<int> mu_j, j_index;
  std::vector<double> rij;
  aceuq::AtomResult result;

  // projections of the local atoms of each element, graded in one call per element
  std::vector<std::vector<double>> proj;    // [element][atom * width]: at least as long as needed
  std::vector<std::vector<int>> atoms;
  std::vector<int> count;    // graded local atoms of each element this step
  std::vector<double> gamma_buf;
  std::vector<int> cluster_buf;

  static std::string element_list(const aceuq::Potential &pot)
  {
    std::string s;
    for (const auto &el : pot.elements()) s += (s.empty() ? "" : " ") + el;
    return s;
  }
};

/* ---------------------------------------------------------------------- */

PairACEUQ::PairACEUQ(LAMMPS *lmp) : Pair(lmp), core(new Core)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  // newton pair off: force (3) and per-atom virial (6) of ghost atoms; LAMMPS sizes its reverse
  // buffers by comm_reverse_off when newton is off, by comm_reverse when it is on
  comm_reverse = comm_reverse_off = 9;
  reverse_virial = 0;

  gamma_flag = 0;
  pair_seconds = gamma_seconds = 0.0;
  nmax_peratom = 0;
  gamma = nullptr;
  cluster = nullptr;
}

PairACEUQ::~PairACEUQ()
{
  delete core;
  memory->destroy(gamma);
  memory->destroy(cluster);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
  // map is deleted by Pair::~Pair()
}

/* ---------------------------------------------------------------------- */

void PairACEUQ::compute(int eflag, int vflag)
{
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  ev_init(eflag, vflag);

  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;
  const int nlocal = atom->nlocal;
  // newton off (pair and bond): LAMMPS does not clear ghost forces (nor per-atom virials) and
  // does not send them back; this pair style does both. LAMMPS decides by force->newton, which is
  // on when either setting is ("newton off on" included): so must this pair style
  const bool own_reverse = force->newton == 0;
  if (own_reverse) {
    const int nall = nlocal + atom->nghost;
    for (int i = nlocal; i < nall; i++) f[i][0] = f[i][1] = f[i][2] = 0.0;
    if (vflag_atom)
      for (int i = nlocal; i < nall; i++)
        for (int k = 0; k < 6; k++) vatom[i][k] = 0.0;
  }

  const int inum = list->inum;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  const int nel = core->potential->nelements();
  const bool want_gamma = gamma_flag != 0;
  aceuq::ProjectionMode mode = aceuq::ProjectionMode::None;
  if (want_gamma) {
    if (!core->grader) {
      gamma_flag = 0;    // asked for this step only: a later run without the request still runs
      if (force->pair != this)    // a sub-style of pair_style hybrid
        error->all(FLERR,
                   "pair_style aceuq: gamma requested (fix pair ... aceuq[:N] gamma 1) from an aceuq "
                   "sub-style to which pair_coeff gave no active set: use 'pair_coeff * * aceuq [N] "
                   "POTENTIAL.yaml ACTIVESET.asi|.casi El1 El2 ...'");
      error->all(FLERR,
                 "pair_style aceuq: gamma requested (fix pair ... aceuq gamma 1) but pair_coeff "
                 "gave no active set: use 'pair_coeff * * POTENTIAL.yaml ACTIVESET.asi|.casi El1 "
                 "El2 ...'");
    }
    grow_peratom();
    for (int i = 0; i < nlocal; i++) {
      gamma[i] = 0.0;
      cluster[i] = -1.0;
    }
    mode = core->grader->full() ? aceuq::ProjectionMode::Full : aceuq::ProjectionMode::Linear;
    core->proj.resize(nel);
    core->atoms.resize(nel);
    std::vector<int> &count = core->count;
    count.assign(nel, 0);
    for (int ii = 0; ii < inum; ii++) {
      const int mu_i = map[type[ilist[ii]]];
      if (core->grader->has_element(mu_i)) count[mu_i]++;
    }
    for (int mu = 0; mu < nel; mu++) {
      core->atoms[mu].clear();
      // the rows are written in place below: grown (and zeroed) only when more are needed, not
      // cleared and zero-filled again every step (at 300 functions 2.4 kB per atom)
      const size_t need = (size_t) count[mu] * core->grader->element(mu).n_proj;
      if (core->proj[mu].size() < need) core->proj[mu].resize(need);
    }
  }

  int current = -1;    // the atom being evaluated, named in errors
  try {
    for (int ii = 0; ii < inum; ii++) {
      const int i = ilist[ii];
      const int mu_i = map[type[i]];
      if (mu_i < 0) continue;
      current = i;

      const int *jlist = firstneigh[i];
      const int jnum = numneigh[i];
      core->mu_j.clear();
      core->j_index.clear();
      core->rij.clear();
      for (int jj = 0; jj < jnum; jj++) {
        const int j = jlist[jj] & NEIGHMASK;
        const int mu_j = map[type[j]];
        if (mu_j < 0) continue;
        const double dx = x[j][0] - x[i][0];
        const double dy = x[j][1] - x[i][1];
        const double dz = x[j][2] - x[i][2];
        if (dx * dx + dy * dy + dz * dz >= core->rcutsq[mu_i * nel + mu_j]) continue;
        core->mu_j.push_back(mu_j);
        core->j_index.push_back(j);
        core->rij.insert(core->rij.end(), {dx, dy, dz});
      }

      const int n = (int) core->mu_j.size();
      const bool graded = want_gamma && core->grader->has_element(mu_i);
      // the projections go straight into this element's batch (the Grader's width and the
      // evaluator's are both Potential::n_projections)
      double *proj_row = nullptr;
      if (graded) {
        const size_t width = core->grader->element(mu_i).n_proj;
        proj_row = core->proj[mu_i].data() + core->atoms[mu_i].size() * width;
        core->atoms[mu_i].push_back(i);
      }
      auto &res = core->result;
      core->evaluator->compute(mu_i, n, core->mu_j.data(), core->rij.data(), true,
                               graded ? mode : aceuq::ProjectionMode::None, res, proj_row);

      if (eflag_global) eng_vdwl += res.energy;
      if (eflag_atom) eatom[i] += res.energy;

      for (int k = 0; k < n; k++) {
        const int j = core->j_index[k];
        const double *g = &res.dE_drij[3 * k];    // dE_i/dr_ij: +g on i, -g on j
        f[i][0] += g[0];
        f[i][1] += g[1];
        f[i][2] += g[2];
        f[j][0] -= g[0];
        f[j][1] -= g[1];
        f[j][2] -= g[2];
        if (vflag_either) {
          const double *r = &core->rij[3 * k];
          // each term is computed once (not once from each side): tally it whole, as newton on
          ev_tally_xyz(i, j, nlocal, 1, 0.0, 0.0, g[0], g[1], g[2], -r[0], -r[1], -r[2]);
        }
      }
    }
    current = -1;
    if (want_gamma) {
      const auto grading = clock::now();
      compute_gamma();
      gamma_seconds += std::chrono::duration<double>(clock::now() - grading).count();
    }
  } catch (std::exception &e) {
    if (current >= 0)
      error->one(FLERR, "pair_style aceuq: atom {} (type {}) at step {}: {}", atom->tag[current],
                 type[current], update->ntimestep, e.what());
    error->one(FLERR, "pair_style aceuq: {}", e.what());
  }

  if (vflag_fdotr) virial_fdotr_compute();
  if (own_reverse) {
    reverse_virial = vflag_atom ? 1 : 0;
    comm->reverse_comm(this);
  }
  pair_seconds += std::chrono::duration<double>(clock::now() - start).count();
}

/* grade the projections collected during compute(), one batch per element. After the force loop,
   not in small batches inside it: there the force loop evicts the inverse (720 kB at 300
   functions) from L2 between batches, and grading costs a fifth more than in one pass. */

void PairACEUQ::compute_gamma()
{
  for (int mu = 0; mu < (int) core->atoms.size(); mu++) {
    const auto &idx = core->atoms[mu];
    const int n = (int) idx.size();
    if (n == 0) continue;
    const int width = core->grader->element(mu).n_proj;
    core->gamma_buf.resize(n);
    core->cluster_buf.resize(n);
    core->grader->grade(mu, n, core->proj[mu].data(), width, core->gamma_buf.data(),
                        core->cluster_buf.data());
    for (int k = 0; k < n; k++) {
      gamma[idx[k]] = core->gamma_buf[k];
      cluster[idx[k]] = core->cluster_buf[k];
    }
  }
}

/* ---------------------------------------------------------------------- */

void PairACEUQ::settings(int narg, char **arg)
{
  // read whole before anything changes: a refused pair_style aceuq keeps the earlier settings
  aceuq::Assign assign = aceuq::Assign::Nearest;
  bool assign_given = false;
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "assign") == 0) {
      if (iarg + 2 > narg)
        error->all(FLERR, "pair_style aceuq: keyword 'assign' needs a value: nearest or min");
      if (strcmp(arg[iarg + 1], "nearest") == 0)
        assign = aceuq::Assign::Nearest;
      else if (strcmp(arg[iarg + 1], "min") == 0)
        assign = aceuq::Assign::Min;
      else
        error->all(FLERR, "pair_style aceuq: unknown value '{}' for assign (expected nearest or min)",
                   arg[iarg + 1]);
      assign_given = true;
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style aceuq: unknown keyword '{}' (known: assign nearest|min)", arg[iarg]);
    }
  }
  core->assign = assign;
  core->assign_given = assign_given;
  // a re-issued pair_style keeps the active set: without 'assign' it goes back to the file's
  if (core->grader) core->grader->set_assign(assign_given ? assign : core->file_assign);
}

/* ---------------------------------------------------------------------- */

void PairACEUQ::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  map = new int[n + 1];
  for (int i = 0; i <= n; i++) {
    map[i] = -1;
    for (int j = 0; j <= n; j++) setflag[i][j] = 0;
  }
}

void PairACEUQ::check_units()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style aceuq requires 'units metal' (ACE potentials use eV and Angstrom), not "
               "'units {}'",
               update->unit_style);
}

void PairACEUQ::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  check_units();

  const int ntypes = atom->ntypes;
  const std::string usage = fmt::format(
      "expected '* * POTENTIAL.yaml [ACTIVESET.asi|.casi] {}' (one element or NULL for each of the {} atom "
      "type{})",
      ntypes == 1 ? "El1" : (ntypes == 2 ? "El1 El2" : fmt::format("El1 ... El{}", ntypes)), ntypes,
      ntypes == 1 ? "" : "s");
  if (narg != 3 + ntypes && narg != 4 + ntypes)
    error->all(FLERR, "pair_coeff for pair_style aceuq: {}, got {} arguments", usage, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style aceuq must start with '* *' (one call maps all atom types)");

  const std::string pot_path = arg[2];
  const bool has_active_set = narg == 4 + ntypes;
  char **elements_arg = arg + narg - ntypes;

  // everything is read and checked before anything is changed: an error caught by the library
  // interface leaves the earlier pair_coeff in force, not half of each
  std::shared_ptr<aceuq::Potential> potential;
  try {
    potential = aceuq::Potential::load(pot_path);
  } catch (const aceuq::InputError &e) {
    error->all(FLERR, "pair_style aceuq: {}", e.what());
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style aceuq: cannot read potential '{}': {}", pot_path, e.what());
  }

  std::vector<int> type_map(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    const char *el = elements_arg[t - 1];
    if (strcmp(el, "NULL") == 0) continue;
    type_map[t] = potential->element_index(el);
    if (type_map[t] < 0 && t == 1 && !has_active_set && platform::file_is_readable(el))    // one name too few
      error->all(FLERR, "pair_coeff for pair_style aceuq: {}; got the file '{}' (an active set?) and {} element "
                 "name{} after the potential", usage, el, ntypes - 1, ntypes == 2 ? "" : "s");
    if (type_map[t] < 0)
      error->all(FLERR, "pair_style aceuq: element '{}' (atom type {}) is not in potential '{}' (elements: {})",
                 el, t, pot_path, Core::element_list(*potential));
  }
  if (std::none_of(type_map.begin() + 1, type_map.end(), [](int mu) { return mu >= 0; }))
    error->all(FLERR, "pair_coeff for pair_style aceuq maps no atom type to an element (all NULL)");

  std::shared_ptr<aceuq::Grader> grader;
  if (has_active_set) {
    const std::string as_path = arg[3];
    // an element name (or NULL) where the active set would be: one name too many, not a file
    if ((as_path == "NULL" || potential->element_index(as_path) >= 0) && !platform::file_is_readable(as_path))
      error->all(FLERR, "pair_coeff for pair_style aceuq: {}; got {} element names after the potential", usage,
                 ntypes + 1);
    try {
      grader = aceuq::Grader::load(as_path, *potential);
    } catch (const aceuq::InputError &e) {
      error->all(FLERR, "pair_style aceuq: {}", e.what());
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style aceuq: cannot read active set '{}': {}", as_path, e.what());
    }
  }

  core->potential = potential;
  // as absolute paths: a later `shell cd` must not make them name other files (the fix's frames
  // file is made absolute when the fix is defined, and compared with these)
  auto absolute = [](const std::string &path) {
    char *resolved = ::realpath(path.c_str(), nullptr);
    const std::string out = resolved ? resolved : path;
    std::free(resolved);
    return out;
  };
  core->files = {absolute(pot_path)};
  if (has_active_set) core->files.push_back(absolute(arg[3]));
  core->evaluator = std::make_unique<aceuq::AtomEvaluator>(core->potential);
  core->grader = grader;
  if (grader) {
    core->file_assign = grader->assign();
    if (core->assign_given) grader->set_assign(core->assign);
  }
  const int nel = potential->nelements();
  core->rcutsq.assign((size_t) nel * nel, 0.0);
  for (int a = 0; a < nel; a++)
    for (int b = 0; b < nel; b++) {
      const double rc = potential->cutoff(a, b);
      core->rcutsq[a * nel + b] = rc * rc;
    }
  for (int i = 1; i <= ntypes; i++) {
    map[i] = type_map[i];
    for (int j = i; j <= ntypes; j++) setflag[i][j] = setflag[j][i] = (type_map[i] >= 0 && type_map[j] >= 0) ? 1 : 0;
  }

  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style aceuq: potential {} (elements: {}){}\n", pot_path,
                   Core::element_list(*core->potential),
                   has_active_set ? std::string(", active set ") + arg[3] : std::string());
}

/* ---------------------------------------------------------------------- */

void PairACEUQ::init_style()
{
  check_units();
  if (!core->potential) error->all(FLERR, "pair_style aceuq: no potential (pair_coeff missing)");
  // bonded neighbours whose special_bonds weights are 0 (the default) are left out of the
  // neighbour list, so of each other's environments: a wrong energy with only LAMMPS's generic
  // warning. Also inside a hybrid style: its sub-styles' lists are drawn from the same list, and
  // LAMMPS takes no per-sub-style special weights for a many-body style.
  if (atom->molecular != Atom::ATOMIC && atom->nbonds > 0)
    for (int k = 1; k <= 3; ++k)
      if (force->special_lj[k] == 0.0 && force->special_coul[k] == 0.0)
        error->all(FLERR, "pair_style aceuq: special_bonds weights of 0 for 1-{} neighbours leave bonded atoms "
                   "out of each other's environments; a many-body potential sees every atom within its cutoff: "
                   "use special_bonds lj/coul 1.0 1.0 1.0", k + 1);
  // neigh_modify exclude takes pairs out of the neighbour list, so out of each other's
  // environments, as special_bonds weights of 0 do (type pairs of which pair_coeff maps one to
  // NULL are not this style's; groups and molecules may be anyone's)
  bool excluded = neighbor->nex_group > 0 || neighbor->nex_mol > 0;
  for (int k = 0; k < neighbor->nex_type; ++k)
    excluded = excluded || (map[neighbor->ex1_type[k]] >= 0 && map[neighbor->ex2_type[k]] >= 0);
  if (excluded)
    error->all(FLERR, "pair_style aceuq: neigh_modify exclude leaves atoms out of each other's environments; a "
               "many-body potential sees every atom within its cutoff: use 'neigh_modify exclude none'{}",
               neighbor->nex_type > 0 ? " (or exclude only types pair_coeff maps to NULL)" : "");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

/* newton pair off: what compute() put on ghost atoms goes back to their owners */

int PairACEUQ::pack_reverse_comm(int n, int first, double *buf)
{
  double **f = atom->f;
  int m = 0;
  for (int i = first; i < first + n; i++) {
    buf[m++] = f[i][0];
    buf[m++] = f[i][1];
    buf[m++] = f[i][2];
    if (reverse_virial)
      for (int k = 0; k < 6; k++) buf[m++] = vatom[i][k];
  }
  return m;
}

void PairACEUQ::unpack_reverse_comm(int n, int *list, double *buf)
{
  double **f = atom->f;
  int m = 0;
  for (int i = 0; i < n; i++) {
    const int j = list[i];
    f[j][0] += buf[m++];
    f[j][1] += buf[m++];
    f[j][2] += buf[m++];
    if (reverse_virial)
      for (int k = 0; k < 6; k++) vatom[j][k] += buf[m++];
  }
}

double PairACEUQ::init_one(int i, int j)
{
  return type_pair_cutoff(i, j);
}

// the cutoff between two atom types (0 where pair_coeff maps either to NULL)
double PairACEUQ::type_pair_cutoff(int i, int j) const
{
  if (!map || map[i] < 0 || map[j] < 0) return 0.0;
  const double rij = core->potential->cutoff(map[i], map[j]);
  const double rji = core->potential->cutoff(map[j], map[i]);
  return rij > rji ? rij : rji;
}

/* ---------------------------------------------------------------------- */

void PairACEUQ::grow_peratom()
{
  if (atom->nmax > nmax_peratom) {
    const int old = nmax_peratom;
    nmax_peratom = atom->nmax;
    memory->grow(gamma, nmax_peratom, "pair:aceuq:gamma");
    memory->grow(cluster, nmax_peratom, "pair:aceuq:cluster");
    for (int i = old; i < nmax_peratom; i++) {    // not graded yet
      gamma[i] = 0.0;
      cluster[i] = -1.0;
    }
  }
}

// The protocol of fix pair: it sets *extract("gamma_flag") to 1 before the force computation on
// the steps it wants gamma, then reads extract_peratom("gamma"). "pair_seconds" and
// "gamma_seconds" (scalars, this rank, since the pair style was created) say what gamma costs.
void *PairACEUQ::extract(const char *name, int &dim)
{
  dim = 0;
  // fix pair asks for each per-atom value it reads: the cluster comes with gamma
  if (strcmp(name, "gamma_flag") == 0 || strcmp(name, "cluster_flag") == 0) return (void *) &gamma_flag;
  if (strcmp(name, "pair_seconds") == 0) return (void *) &pair_seconds;
  if (strcmp(name, "gamma_seconds") == 0) return (void *) &gamma_seconds;
  return nullptr;
}

void *PairACEUQ::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  const bool g = strcmp(name, "gamma") == 0, c = strcmp(name, "cluster") == 0;
  if ((!g && !c) || !core->grader) return nullptr;
  // what the last graded step left (also to a reader that does not ask for gamma itself, such as
  // fix pair with trigger 0 beside a fix that does)
  grow_peratom();
  return g ? (void *) gamma : (void *) cluster;
}

double PairACEUQ::memory_usage()
{
  double bytes = Pair::memory_usage() + 2.0 * nmax_peratom * sizeof(double);
  // the projections kept for grading (allocated on the first step that asks for gamma)
  for (const auto &p : core->proj) bytes += double(p.capacity()) * sizeof(double);
  return bytes;
}

const std::vector<std::string> &PairACEUQ::input_files() const
{
  return core->files;
}

/* ---------------------------------------------------------------------- */

bool PairACEUQ::has_active_set() const
{
  return static_cast<bool>(core->grader);
}

double PairACEUQ::largest_cutoff() const
{
  double largest = 0.0;
  for (int i = 1; i <= atom->ntypes; ++i)
    for (int j = i; j <= atom->ntypes; ++j) largest = std::max(largest, type_pair_cutoff(i, j));
  return largest;
}

const char *PairACEUQ::type_element(int itype) const
{
  if (!map || itype < 1 || itype > atom->ntypes || map[itype] < 0) return "X";
  return core->potential->elements()[map[itype]].c_str();
}
