/*
 * The python loader: libvmod_lambda_loader_{jemalloc,libc}.so.
 *
 * Its NEEDED entries are, in this order, the allocator varnishd uses (libjemalloc.so.2 for the
 * _jemalloc build) and libpython. The thin VMOD opens it with RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND,
 * so that libpython and the libz it needs are loaded here for the first time and bind zlib to the real
 * libz (not varnishd's exported copy) and malloc/free to varnishd's allocator (it is first in the
 * lookup scope). See vmod_lambda.vcc, PITFALLS.
 *
 * vmod_lambda_boot() starts the interpreter once per process and imports the Cython implementation,
 * which exports its entry-point table as a capsule. Linked -z nodelete: it is never unloaded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmod_lambda_ops.h"

#define IMPL_MODULE	"vmod_lambda._vmod"
#define IMPL_CAPSULE	IMPL_MODULE "._ops"

/* Set by the thin VMOD when this loader failed its binding self-check: Python must never start. */
int vmod_lambda_refused;

static pthread_mutex_t boot_mtx = PTHREAD_MUTEX_INITIALIZER;
static int started;
static char started_home[4096];
static const struct vmod_lambda_ops *impl_ops;

/* The pending Python exception as "Type: message" (GIL held); clears it. */
static void
describe_exception(const char *what, char *err, size_t errlen)
{
	PyObject *type, *value, *tb, *s = NULL;
	const char *text = NULL, *tname = "error";

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (type != NULL)
		tname = ((PyTypeObject *)type)->tp_name;
	if (value != NULL)
		s = PyObject_Str(value);
	if (s != NULL)
		text = PyUnicode_AsUTF8(s);
	if (text == NULL) {
		PyErr_Clear();
		text = "";
	}
	snprintf(err, errlen, "%s: %s: %s", what, tname, text);
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

static int
start_interpreter(const char *home, char *err, size_t errlen)
{
	char exe[4200];
	PyStatus st;
	PyConfig config;

	if (snprintf(exe, sizeof exe, "%s/bin/python3", home) >= (int)sizeof exe) {
		snprintf(err, errlen, "the home path is too long");
		return (-1);
	}
	if (access(exe, X_OK) != 0) {
		snprintf(err, errlen, "%s is missing or not executable for this user (uid %d): is "
		    "vmod-lambda installed there, and readable by the varnishd child?", exe,
		    (int)getuid());
		return (-1);
	}

	/*
	 * Isolated: no PYTHON* variables, no user site, nothing from the command line; the venv's
	 * pyvenv.cfg (found from program_name) gives sys.prefix and site-packages.
	 * Varnish owns the signals, stdio and the process: Python must not install handlers.
	 */
	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 0;
	config.parse_argv = 0;
	config.configure_c_stdio = 0;
	config.faulthandler = 0;
	config.tracemalloc = 0;
	config.write_bytecode = 0;
	config.pathconfig_warnings = 0;
	config.site_import = 1;
	st = PyConfig_SetBytesString(&config, &config.program_name, exe);
	if (!PyStatus_Exception(st))
		st = PyConfig_SetBytesString(&config, &config.executable, exe);
	if (!PyStatus_Exception(st))
		st = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	if (PyStatus_Exception(st)) {
		snprintf(err, errlen, "Python initialization failed: %s%s%s",
		    st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "");
		return (-1);
	}
	return (0);
}

/* Import the implementation and take its table (GIL held). */
static const struct vmod_lambda_ops *
import_impl(char *err, size_t errlen)
{
	PyObject *m;
	const struct vmod_lambda_ops *o;

	m = PyImport_ImportModule(IMPL_MODULE);
	if (m == NULL) {
		describe_exception("cannot import " IMPL_MODULE, err, errlen);
		return (NULL);
	}
	Py_DECREF(m);
	o = PyCapsule_Import(IMPL_CAPSULE, 0);
	if (o == NULL)
		describe_exception("cannot get " IMPL_CAPSULE, err, errlen);
	return (o);
}

const struct vmod_lambda_ops *
vmod_lambda_boot(const char *home, char *err, size_t errlen)
{
	const struct vmod_lambda_ops *o = NULL;
	PyGILState_STATE gs;

	pthread_mutex_lock(&boot_mtx);
	if (started && strcmp(home, started_home)) {
		snprintf(err, errlen, "Python already runs in this varnishd child with home %s, "
		    "not %s: restart varnishd", started_home, home);
	} else if (impl_ops != NULL) {
		o = impl_ops;
	} else if (!started) {
		if (start_interpreter(home, err, errlen) == 0) {
			started = 1;
			snprintf(started_home, sizeof started_home, "%s", home);
			o = impl_ops = import_impl(err, errlen);
			/* Varnish threads never hold the GIL: give it up for good. */
			(void)PyEval_SaveThread();
		}
	} else {
		/* Started, but the import failed earlier: the installation may have been fixed. */
		gs = PyGILState_Ensure();
		o = impl_ops = import_impl(err, errlen);
		PyGILState_Release(gs);
	}
	pthread_mutex_unlock(&boot_mtx);
	return (o);
}
