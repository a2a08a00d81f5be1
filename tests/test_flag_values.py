"""Every number a user gives is checked when the flags are parsed: finite and in its range (a loss
weight >= 0, a temperature > 0, a share in (0, 1]), lists not empty; one line, exit 2
(trainers.flags.number_type, number_list)."""

import importlib

import pytest

from trainers import flags

REFUSED = [
    ("trainers.defense", ["--alpha-max", "nan"], "argument --alpha-max: must be a finite number >= 0, got nan"),
    ("trainers.defense", ["--alpha-max", "inf"], "argument --alpha-max: must be a finite number >= 0, got inf"),
    ("trainers.defense", ["--beta-max", "-5"], "argument --beta-max: must be a finite number >= 0, got -5"),
    ("trainers.defense", ["--eps", "nan"], "argument --eps: must be a finite number >= 0"),
    ("trainers.defense", ["--eps-grid", "0", "-0.1"], "argument --eps-grid: must be a finite number >= 0"),
    ("trainers.defense", ["--pixel-scale", "0"], "argument --pixel-scale: must be a finite number > 0"),
    ("trainers.defense", ["--eps-iter", "0"], "argument --eps-iter: must be a finite number > 0"),
    ("trainers.defense", ["--fgsm-train-eps", "-1"], "argument --fgsm-train-eps: must be a finite number >= 0"),
    ("trainers.distill", ["--alpha", "1e400"], "argument --alpha: must be a finite number >= 0, got 1e400"),
    ("trainers.distill", ["--temperature", "nan"], "argument --temperature: must be a finite number > 0"),
    ("trainers.distill", ["--temperature", "0"], "argument --temperature: must be a finite number > 0"),
    ("trainers.distill", ["--distill-alpha", "1.5"], "argument --distill-alpha: must be a finite number in [0, 1]"),
    ("trainers.distill", ["--sobolev-alpha", "-0.1"], "argument --sobolev-alpha: must be a finite number >= 0"),
    ("trainers.distill", ["--fraction", "nan"], "argument --fraction: must be a finite number in (0, 1]"),
    ("trainers.mtl", ["--dwa-temperature", "0"], "argument --dwa-temperature: must be a finite number > 0"),
    ("trainers.mtl", ["--gradnorm-alpha", "nan"], "argument --gradnorm-alpha: must be a finite number >= 0"),
    ("trainers.mtl", ["--pcgrad-seed", "-3"], "argument --pcgrad-seed: must be in [0, 2147483647], got -3"),
    ("trainers.mtl", ["--famo-weight-lr", "-1"], "argument --famo-weight-lr: must be a finite number >= 0"),
    ("tuning.defense", ["--alphas", "nan"], "argument --alphas: expected comma-separated numbers, each a "
                                            "finite number >= 0, got 'nan'"),
    ("tuning.defense", ["--betas", "-1"], "argument --betas: expected comma-separated numbers, each"),
    ("tuning.defense", ["--alphas", ","], "argument --alphas: expected comma-separated numbers, got ','"),
    ("tuning.defense", ["--betas", ""], "argument --betas: expected comma-separated numbers, got ''"),
    ("tuning.defense", ["--clean-drop", "nan"], "argument --clean-drop: must be a finite number >= 0"),
    ("tuning.defense", ["--pixel-scale", "-1"], "argument --pixel-scale: must be a finite number > 0"),
    ("tuning.distill", ["--temperatures", "1,0"], "argument --temperatures: expected comma-separated "
                                                  "numbers, each a finite number > 0"),
    ("tuning.distill", ["--alphas", "inf"], "argument --alphas: expected comma-separated numbers, each"),
    ("tuning.distill", ["--alphas", ""], "argument --alphas: expected comma-separated numbers, got ''"),
]


@pytest.mark.parametrize("module, argv, expected", REFUSED, ids=[" ".join(c[:2][1]) for c in REFUSED])
def test_a_nonsense_number_is_refused_in_one_line(module, argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert expected in err, err


def test_good_numbers_pass_as_floats():
    assert flags.nonnegative_float("0") == 0.0 and flags.positive_float("1e-3") == 1e-3
    assert flags.fraction_type("1") == 1.0 and flags.unit_float("0") == 0.0
    assert flags.number_list(flags.positive_float)(" 1, 2.5,") == [1.0, 2.5]


def test_the_distillation_sweep_refuses_a_hinton_alpha_above_1():
    from great_tf.errors import GreatError
    from tuning import distill

    args = distill.parse_args(["--alphas", "0.5,2"])
    assert distill.search_space("great", args)["alpha"] == [0.5, 2.0]  # GREAT's alpha is a weight
    with pytest.raises(GreatError, match=r"--alphas 2: Hinton distillation's alpha .* must be in \[0, 1\]"):
        distill.search_space("distill", args)
