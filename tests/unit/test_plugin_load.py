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


def test_xdist_workers_take_the_controllers_criu_without_probing_it(tmp_path):
    """criu --version and criu check run once, in the controller: workers get the probed
    criu and the skip-deciding features through workerinput."""
    import pytest

    from zdtmpy.criu import CriuNotFound, find_criu

    try:
        real = find_criu()
    except CriuNotFound as exc:
        pytest.skip(f"no criu here: {exc}")
    calls = tmp_path / "calls"
    wrapper = tmp_path / "criu"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real.path} "$@"\n')
    wrapper.chmod(0o755)
    (tmp_path / "descs").mkdir()
    for name in ("x", "y", "z"):  # items the workers skip, asking their criu why
        (tmp_path / "descs" / f"{name}.desc").write_text("{'arch': 'nosucharch'}")
    res = _pytest(["-q", "-p", "no:cacheprovider", "--zdtm-mode", "plain", "-rs",
                   "--zdtm-compress", "off", "--zdtm-compress", "page", "--criu-bin",
                   str(wrapper), "-n", "2", "descs"], tmp_path,
                  ZDTM_REQUIRE_CRIU="")  # every item skips by design; CI exports it
    assert res.returncode == 0, res.stdout + res.stderr
    assert "6 skipped" in res.stdout and "nosucharch" in res.stdout, res.stdout
    lines = calls.read_text().splitlines()
    assert lines.count("--version") == 1 and lines.count("check") == 1, lines
    assert "check --feature compress" in lines   # asked once, for the workers too
    assert len(lines) == len(set(lines)), lines  # nothing asked twice
