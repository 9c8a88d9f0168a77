"""The oracle reads every page as restore would, with real criu and a real workload."""

from pathlib import Path

import pytest

from zdtmpy.build import cache_root
from zdtmpy.builtin import workloads_dir

REPO = Path(__file__).resolve().parents[2]
LIB = workloads_dir() / "lib"

# A private file mapping that is only read: criu keeps its pages in the file, not the images.
READ_ONLY_FILE_MAPPING = r'''
#include <sys/mman.h>
#include <unistd.h>
#include "lib/zdtmtst.h"
#include "lib/pagegen.h"

int main(int argc, char **argv)
{
	const size_t n = 16;
	volatile char sink;
	struct zt_area *a;
	const char *path;
	char *p;
	size_t i;
	int fd;

	zt_init(argc, argv);
	path = zt_aux_path("read-only-file");
	fd = zt_make_file(path, n, 0xa5);
	p = zt_mmap(n, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0, path);
	close(fd);
	for (i = 0; i < n; i++)
		sink = p[i * 4096];
	(void)sink;
	a = zt_area_new(p, n, "file-private-read");
	zt_area_note(a, 0, n, PG_FILL, 0xa5, 0);
	zt_area_publish(a, 0);
	zt_ready();
	zt_run(NULL, NULL);
}
'''

# The real build cache, read before pytester points HOME at its temporary directory: inner
# runs share the workloads built once instead of compiling them again each.
BUILD_CACHE = cache_root()


@pytest.fixture
def project(criu, pytester, monkeypatch):
    # the session's criu (tests/conftest.py, found before pytester moved HOME) for the runs
    monkeypatch.setenv("ZDTM_CRIU", str(criu.path))
    monkeypatch.setenv("ZDTMPY_CACHE", str(BUILD_CACHE))
    pytester.makeini("[pytest]\nzdtm_descs = descs\nzdtm_static = static\n")
    (pytester.path / "descs").mkdir()
    (pytester.path / "static").mkdir()
    (pytester.path / "static" / "lib").symlink_to(LIB)
    return pytester


@pytest.mark.criu
def test_untouched_private_file_pages_are_read_from_the_file(project):
    """criu leaves the pages out of the images; the oracle must expect the file's bytes
    there (restore maps the file), not zeros."""
    (project.path / "static" / "filepriv.c").write_text(READ_ONLY_FILE_MAPPING)
    (project.path / "descs" / "filepriv.desc").write_text("{}")
    res = project.runpytest_subprocess("-p", "no:cacheprovider", "--zdtm-mode", "plain",
                                       "--zdtm-compress", "off", "--zdtm-compress", "page",
                                       "descs")
    res.assert_outcomes(passed=2)
