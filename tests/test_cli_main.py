"""The `aceuq` dispatcher and argument checks of the verbs: usage errors exit with status 2
(argparse's convention, a message on stderr, no traceback), a missing LAMMPS plugin makes
`aceuq info` fail with 1."""
import pytest

from aceuq.cli.main import VERBS, main


def test_no_verb_is_a_usage_error(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: aceuq VERB" in out and all(v in out for v in VERBS)
    assert main(["--help"]) == 0


def test_unknown_verb_is_a_usage_error(capsys):
    assert main(["nope"]) == 2
    cap = capsys.readouterr()
    assert "unknown verb 'nope'" in cap.err and "Traceback" not in cap.err
    assert cap.out == ""


def test_info_without_the_plugin_fails(monkeypatch, capsys):
    import aceuq.lammps

    def missing():
        raise FileNotFoundError("no aceuqplugin.so here")

    monkeypatch.setattr(aceuq.lammps, "plugin_path", missing)
    assert main(["info"]) == 1
    out = capsys.readouterr().out
    assert "not installed" in out and "no aceuqplugin.so here" in out


def test_info_with_the_plugin_succeeds(monkeypatch, capsys, tmp_path):
    import aceuq.lammps

    plugin = tmp_path / "aceuqplugin.so"
    monkeypatch.setattr(aceuq.lammps, "plugin_path", lambda: str(plugin))
    assert main(["info"]) == 0
    assert f"plugin load {plugin}" in capsys.readouterr().out


def _usage_error(argv, capsys, option):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err and option in err, err
    return err


def test_select_n_must_be_at_least_1(tmp_path, capsys):
    out = tmp_path / "o.extxyz"
    err = _usage_error(["select", "pot.yaml", "c.extxyz", "--active-set", "a.asi", "-n", "0", "-o", str(out)],
                       capsys, "argument -n")
    assert "at least 1" in err
    assert not out.exists()


def test_select_max_iters_must_be_at_least_1(tmp_path, capsys):
    """With no MaxVol swap allowed nothing could enter, and the note would blame the candidates."""
    out = tmp_path / "o.extxyz"
    err = _usage_error(["select", "pot.yaml", "c.extxyz", "--active-set", "a.asi", "-n", "1", "--max-iters", "0",
                        "-o", str(out)], capsys, "argument --max-iters")
    assert "at least 1" in err


def test_demo_upper_below_lower(tmp_path, capsys, monkeypatch):
    import aceuq.demo

    def no_run(*args, **kwargs):
        raise AssertionError("the demo ran with --upper below --lower")

    monkeypatch.setattr(aceuq.demo, "run", no_run)
    out = tmp_path / "demo"
    err = _usage_error(["demo", "-o", str(out), "--lower", "5", "--upper", "3"], capsys, "--upper")
    assert "--lower" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, option", [
    (["ensemble", "d.extxyz", "-n", "2", "-o", "OUT", "--alpha", "inf"], "argument --alpha"),
    (["ensemble", "d.extxyz", "-n", "2", "-o", "OUT", "--alpha", "nan"], "argument --alpha"),
    (["select", "p.yaml", "c.extxyz", "--active-set", "a.asi", "-n", "1", "-o", "OUT", "--tol", "inf"],
     "argument --tol"),
    (["activeset", "p.yaml", "t.extxyz", "-o", "OUT", "--tol", "inf"], "argument --tol"),
])
def test_infinite_numbers_are_refused(argv, option, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in argv]
    err = _usage_error(argv, capsys, option)
    assert "must be finite" in err
    assert not out.exists()
