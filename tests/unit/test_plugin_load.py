"""The plugin loads anywhere: no C compiler, no criu, autoload on or off."""

import os
import subprocess
import sys


def _pytest(args, cwd, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def test_help_without_compiler_or_criu(tmp_path):
    res = _pytest(["--help", "-p", "no:cacheprovider"], tmp_path,
                  PATH=str(tmp_path), CC="/nonexistent/cc", ZDTM_CRIU="",
                  ZDTMPY_CACHE=str(tmp_path / "cache"))
    assert res.returncode == 0, res.stderr
    assert "--zdtm-compress" in res.stdout and "--criu-bin" in res.stdout
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_explicit_plugin_with_autoload_disabled(tmp_path):
    (tmp_path / "descs").mkdir()
    (tmp_path / "descs" / "x.desc").write_text("{'flags': 'crfail'}")
    base = ["--collect-only", "-q", "-p", "no:cacheprovider", "--zdtm-mode", "plain",
            "--zdtm-compress", "off"]
    res = _pytest([*base, "-p", "zdtmpy.plugin", "descs"], tmp_path,
                  PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "descs/x.desc::x[plain-off]" in res.stdout
    # and without it, autoload off means no zdtmpy: the .desc is not collected
    res = _pytest([*base[:4], "descs"], tmp_path, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "x[plain-off]" not in res.stdout
