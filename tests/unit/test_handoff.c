/* Unit tests for handoff.c: engine names, DOCKER_HOST parsing and the
 * message stream docker answers to /images/load.  The transfers themselves
 * need a running engine and are covered by tests/integration/handoff.bats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handoff.h"
#include "util.h"

static void test_engine_names(void **state)
{
	(void)state;
	ib_handoff_engine e = IB_HANDOFF_PODMAN;
	assert_int_equal(ib_handoff_engine_parse(NULL, &e, NULL), 0);
	assert_int_equal(e, IB_HANDOFF_AUTO);
	assert_int_equal(ib_handoff_engine_parse("docker", &e, NULL), 0);
	assert_int_equal(e, IB_HANDOFF_DOCKER);
	assert_int_equal(ib_handoff_engine_parse("podman", &e, NULL), 0);
	assert_int_equal(e, IB_HANDOFF_PODMAN);
	assert_int_equal(ib_handoff_engine_parse("auto", &e, NULL), 0);
	assert_int_equal(e, IB_HANDOFF_AUTO);
	ib_error *err = NULL;
	assert_int_equal(ib_handoff_engine_parse("containerd", &e, &err), IB_EINVALID);
	assert_non_null(strstr(ib_error_msg(err), "containerd"));
	ib_error_free(&err);
	assert_string_equal(ib_handoff_engine_name(IB_HANDOFF_PODMAN), "podman");
}

static void test_docker_endpoint(void **state)
{
	(void)state;
	char *sock = NULL, *base = NULL;
	assert_int_equal(ib_handoff_docker_endpoint(NULL, &sock, &base, NULL), 0);
	assert_string_equal(sock, "/var/run/docker.sock");
	assert_string_equal(base, "http://localhost");
	free(sock);
	free(base);
	assert_int_equal(
	    ib_handoff_docker_endpoint("unix:///run/user/1/docker.sock", &sock, &base, NULL), 0);
	assert_string_equal(sock, "/run/user/1/docker.sock");
	free(sock);
	free(base);
	assert_int_equal(ib_handoff_docker_endpoint("tcp://10.0.0.2:2375", &sock, &base, NULL), 0);
	assert_null(sock);
	assert_string_equal(base, "http://10.0.0.2:2375");
	free(base);
	ib_error *err = NULL;
	assert_int_equal(ib_handoff_docker_endpoint("ssh://me@host", &sock, &base, &err),
			 IB_EINVALID);
	assert_non_null(strstr(ib_error_msg(err), "ssh://me@host"));
	ib_error_free(&err);
	assert_int_equal(ib_handoff_docker_endpoint("unix://relative.sock", &sock, &base, &err),
			 IB_EINVALID);
	ib_error_free(&err);
	assert_null(sock);
	assert_null(base);
}

static void test_docker_messages(void **state)
{
	(void)state;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	const char *ok = "{\"stream\":\"Loaded image: app:latest\\n\"}\r\n"
			 "{\"stream\":\"Loaded image: app:2\\n\"}\n";
	assert_int_equal(ib_handoff_docker_messages(ok, strlen(ok), f, NULL), 0);
	fclose(f);
	assert_string_equal(text, "Loaded image: app:latest\nLoaded image: app:2\n");
	free(text);
	ib_error *err = NULL;
	const char *bad = "{\"stream\":\"x\\n\"}{\"errorDetail\":{\"message\":\"no space left\"},"
			  "\"error\":\"no space left\"}";
	assert_int_equal(ib_handoff_docker_messages(bad, strlen(bad), NULL, &err), IB_ERROR);
	assert_string_equal(ib_error_msg(err), "docker: no space left");
	ib_error_free(&err);
	const char *detail = "{\"errorDetail\":{\"message\":\"only detail\"}}";
	assert_int_equal(ib_handoff_docker_messages(detail, strlen(detail), NULL, &err), IB_ERROR);
	assert_non_null(strstr(ib_error_msg(err), "only detail"));
	ib_error_free(&err);
	assert_int_equal(ib_handoff_docker_messages("<html>", 6, NULL, &err), IB_EINVALID);
	ib_error_free(&err);
	assert_int_equal(ib_handoff_docker_messages("", 0, NULL, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_engine_names),
	    cmocka_unit_test(test_docker_endpoint),
	    cmocka_unit_test(test_docker_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
