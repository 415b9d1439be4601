/* imgbuild login / logout: registry credentials in a docker-compatible
 * auth file.  Secrets are never printed, --debug included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth.h"
#include "cli/commands.h"
#include "registry.h"
#include "util.h"

#define SECRET_CAP (64u << 10)

static const char login_usage[] =
    "Usage: imgbuild login [-u USER] [--password-stdin | -p PASSWORD] HOST\n"
    "\n"
    "Check the credentials against the registry HOST (e.g. localhost:5000,\n"
    "docker.io) and store them.  Without --password-stdin or -p the password is\n"
    "read from the terminal with echo off.  Credentials go to the --authfile,\n"
    "else $REGISTRY_AUTH_FILE, else docker's config ($DOCKER_CONFIG/config.json\n"
    "or ~/.docker/config.json) and also podman's\n"
    "$XDG_RUNTIME_DIR/containers/auth.json when that file exists.  A file that\n"
    "names a credential helper for HOST (credHelpers, else credsStore) has the\n"
    "secret stored through docker-credential-NAME; otherwise it is written to\n"
    "the file in plain text (mode 0600; other entries are kept).\n"
    "\n"
    "Options:\n"
    "  -u, --username USER   user name (asked for on a terminal when missing)\n"
    "  --password-stdin      read the password from standard input\n"
    "  -p, --password PASS   the password (visible to other users: prefer\n"
    "                        --password-stdin)\n"
    "  -h, --help            this help\n";

static const char logout_usage[] =
    "Usage: imgbuild logout HOST\n"
    "\n"
    "Remove the stored credentials for the registry HOST from every place\n"
    "'imgbuild login' writes: the credential helper configured for HOST\n"
    "(erased there; the credHelpers mapping itself is kept) and the plain\n"
    "entries of the auth files.\n"
    "\n"
    "Options:\n"
    "  -h, --help   this help\n";

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void chomp(char *s)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

/* One line from the terminal on stdin; echo off for secrets. NULL on EOF. */
static char *prompt_line(const char *prompt, bool echo)
{
	fputs(prompt, stderr);
	fflush(stderr);
	struct termios old, quiet;
	bool restored = true;
	if (!echo && tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0)
			restored = false;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);
	if (!restored)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	if (n < 0) {
		if (line)
			explicit_bzero(line, cap);
		free(line);
		return NULL;
	}
	chomp(line);
	return line;
}

/* The command line of login: -1, or the exit status (help, usage error). */
static int parse_login(int argc, char **argv, ib_global *g, const char **host, char **user,
		       char **pass, bool *pass_stdin)
{
	enum { O_PASS_STDIN = 256 };
	static const struct option opts[] = {{"username", required_argument, NULL, 'u'},
					     {"password", required_argument, NULL, 'p'},
					     {"password-stdin", no_argument, NULL, O_PASS_STDIN},
					     {NULL, 0, NULL, 0}};
	static const ib_cli_cmd cmd = {
	    .name = "login", .help = login_usage, .shortopts = "u:p:", .longopts = opts};
	ib_cli_parser p;
	ib_cli_begin(&p, &cmd, argc, argv, g);
	int c;
	while ((c = ib_cli_next(&p)) != -1) {
		if (c == 'u') {
			free(*user);
			*user = xstrdup(optarg);
		} else if (c == 'p') {
			wipe_free(*pass);
			*pass = xstrdup(optarg);
		} else if (c == O_PASS_STDIN) {
			*pass_stdin = true;
		}
	}
	if (p.exit >= 0)
		return p.exit;
	if (optind >= argc)
		return ib_cli_usage_error("login", "missing registry host");
	if (optind + 1 < argc)
		return ib_cli_usage_error("login", "unexpected argument '%s'", argv[optind + 1]);
	*host = argv[optind];
	if (*pass_stdin && *pass)
		return ib_cli_usage_error("login",
					  "--password and --password-stdin exclude each other");
	if (*pass_stdin && !*user)
		return ib_cli_usage_error("login", "--password-stdin needs --username");
	return -1;
}

int ib_cmd_login(int argc, char **argv, ib_global *g)
{
	const char *host = NULL;
	char *user = NULL, *pass = NULL;
	bool pass_stdin = false;
	int rc = parse_login(argc, argv, g, &host, &user, &pass, &pass_stdin);
	bool pass_arg = pass != NULL;
	if (rc >= 0)
		goto out;
	rc = 1;
	if (pass_arg)
		fputs("WARNING! Using --password on the command line is insecure. "
		      "Use --password-stdin.\n",
		      stderr);
	if (pass_stdin) {
		ib_error *err = NULL;
		size_t n = 0;
		if (ib_read_fd(STDIN_FILENO, SECRET_CAP, &pass, &n, &err) < 0) {
			ib_error_wrap(&err, "login %s: read password from stdin", host);
			rc = ib_cli_fail(&err);
			goto out;
		}
		chomp(pass);
	} else if (!pass) {
		if (!isatty(STDIN_FILENO)) {
			rc = ib_cli_failf(IB_ERROR,
					  "login %s: cannot ask for a password: stdin is not a "
					  "terminal (use --password-stdin)",
					  host);
			goto out;
		}
		if (!user) {
			user = prompt_line("Username: ", true);
			if (!user)
				goto out;
		}
		pass = prompt_line("Password: ", false);
		if (!pass)
			goto out;
	}
	if (!user || !*user) {
		rc = ib_cli_failf(IB_EINVALID, "login %s: empty user name", host);
		goto out;
	}
	if (!*pass) {
		rc = ib_cli_failf(IB_EINVALID, "login %s: empty password", host);
		goto out;
	}
	{
		ib_credentials creds = {user, pass};
		ib_registry_options o = IB_REGISTRY_OPTIONS_INIT;
		ib_cli_registry_options(&o, g, NULL);
		ib_error *err = NULL;
		if (ib_registry_login_check(host, &creds, &o, &err) < 0) {
			ib_error_wrap(&err, "login %s", host);
			rc = ib_cli_fail(&err);
			goto out;
		}
		ib_auth_stored st;
		if (ib_auth_login_store(g->authfile, host, user, pass, &st, &err) < 0) {
			ib_auth_stored_clear(&st);
			ib_error_wrap(&err, "login %s", host);
			rc = ib_cli_fail(&err);
			goto out;
		}
		for (size_t i = 0; st.plain_files[i]; i++)
			fprintf(stderr,
				"WARNING! Your password will be stored unencrypted in %s.\n",
				st.plain_files[i]);
		if (st.plain_files[0])
			fputs("Configure a credential helper to remove this warning. See\n"
			      "https://docs.docker.com/engine/reference/commandline/login/"
			      "#credential-stores\n\n",
			      stderr);
		for (size_t i = 0; g->debug && st.helpers[i]; i++)
			fprintf(stderr, "imgbuild: debug: credentials stored through %s\n",
				st.helpers[i]);
		ib_auth_stored_clear(&st);
	}
	puts("Login Succeeded");
	rc = 0;
out:
	free(user);
	wipe_free(pass);
	return rc;
}

int ib_cmd_logout(int argc, char **argv, ib_global *g)
{
	static const ib_cli_cmd cmd = {.name = "logout", .help = logout_usage};
	int rc = ib_cli_parse_plain(&cmd, argc, argv, g);
	if (rc >= 0)
		return rc;
	if (optind >= argc)
		return ib_cli_usage_error("logout", "missing registry host");
	if (optind + 1 < argc)
		return ib_cli_usage_error("logout", "unexpected argument '%s'", argv[optind + 1]);
	const char *host = argv[optind];
	ib_error *err = NULL;
	ib_auth_stored st;
	int r = ib_auth_logout(g->authfile, host, &st, &err);
	for (size_t i = 0; st.warnings && st.warnings[i]; i++)
		fprintf(stderr, "WARNING: could not erase credentials: %s\n", st.warnings[i]);
	ib_auth_stored_clear(&st);
	if (r < 0) {
		ib_error_wrap(&err, "logout %s", host);
		return ib_cli_fail(&err);
	}
	cleanup_free char *h = ib_auth_normalize_host(host);
	printf("Removed login credentials for %s\n", h);
	return 0;
}
