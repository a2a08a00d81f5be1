"""Adversarial defense with GREAT and GREACE next to its baselines (paper Algorithm 1, Tables 1-2,
Figure 4), evaluated with the paper's attacks, stronger ones (APGD, Square, the standard
AutoAttack) and gradient-masking diagnostics.

    python -m trainers.defense --dataset cifar10                     # all five methods, small preset
    python -m trainers.defense --dataset cifar10 --method great+ce --preset paper
    python -m trainers.defense --evaluate runs/defense/cifar10/great+ce   # re-evaluate a saved model
    python -m trainers.defense --evaluate runs/defense/cifar10/great+ce --attacks strong

Every eps is on the [0, 1] pixel scale unless --pixel-scale says otherwise (e.g. --pixel-scale 255
--eps 8 means 8/255); every table and figure states it. The protocol lives in great_tf.evaluation
(docs/design.md#robustness); this file parses flags and trains.
"""

import os

from trainers import flags

# AutoAttack's budgets at --preset paper; at the small preset a smaller one, so that the strong
# attacks add about as much time as the paper's columns: APGD 20 iterations (checkpoints at
# 4, 7, 10, ...), 3 APGD-T targets, FAB-T as APGD-T, Square 500 queries (its p schedule reaches
# p_init / 8).
PRESETS = {
    # About ten minutes on 2 CPU cores for all five methods on the real CIFAR-10 subset (5000
    # training images) with the paper's columns; --attacks all adds the strong attacks and the
    # masking diagnostics. Attacks run on the first 200 test images, SPSA on 50.
    "small": {"epochs": 3, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": 200, "spsa_limit": 50, "apgd_iterations": 20, "apgd_restarts": 1,
              "apgd_targets": 3, "fab_iterations": 20, "fab_targets": 3, "square_queries": 500},
    # The evidence runs of docs/results.md (#14): one method and one seed in at most about 20
    # minutes on 2 CPU cores, attacks included. Full MNIST (60,000 images): 3 epochs at width 8,
    # batch 128 (the smallest number of epochs at which alpha and beta, which are 0 during the
    # first epoch, act for most of training). Measured, seed 0, training alone: baseline 3.2 min,
    # FGSM adversarial training 7.6, GREACE 9.6, GREAT 8.8, GRE(AT+CE) 9.6; all five with their
    # attacks 57 min, each re-attack at another eps about 2.5 min. The CIFAR-10
    # subset (5,000 images): 30 epochs at width 16, batch 64. Attacks on 500 test images (SPSA
    # 100), APGD 50 iterations, 3 APGD-T targets, Square 1,000 queries. Measured on the CIFAR-10
    # subset, seed 0 (training alone; the attacks add 3-5 min): baseline 5.5 min, FGSM
    # adversarial training 15.5 min, GREACE 14.9 min, GREAT 16.7 min, GRE(AT+CE) about 17 min
    # (the middle three shared the cores with short test runs). Every stage: docs/results.md.
    "medium": {"epochs": flags.PerDataset(30, mnist=3), "batch_size": flags.PerDataset(64, mnist=128),
               "width": flags.PerDataset(16, mnist=8), "train_limit": None, "steps_per_epoch": None,
               "attack_limit": 500, "spsa_limit": 100, "apgd_iterations": 50, "apgd_restarts": 1,
               "apgd_targets": 3, "fab_iterations": 50, "fab_targets": 3,
               "square_queries": 1000},
    # The complete CIFAR-10 (50,000 / 10,000; pass --data-dir ../shared/tensorflow_datasets_full),
    # #29: ResNet-18 width 16, batch 128, 30 epochs, aimed at >= 85 % clean for the baseline.
    # Measured per epoch of 391 steps on 2 idle CPU cores (python -m bench.defense --widths 16
    # --batch-size 128 --steps 4: seconds per step x 391): baseline 63 s, FGSM adversarial
    # training 160 s, GREACE 153 s, GREAT 222 s, GRE(AT+CE) 219 s. In fit an epoch costs 1.35x
    # that (the baseline's first epochs: 83 and 87 s, evaluation of the 10,000 test images
    # included): about 9.2 h per seed for the five trainings, 11 h with the attacks. The baseline
    # reached 86.37 % clean test accuracy (seed 0). Attacks on the first 1,000 test
    # images (SPSA 100) with medium's budgets. The remaining distance to the paper: width 64 (4x),
    # 100 epochs (3.3x). docs/results_full.md has the table.
    "large": {"epochs": 30, "batch_size": 128, "width": 16, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": 1000, "spsa_limit": 100, "apgd_iterations": 50, "apgd_restarts": 1,
              "apgd_targets": 3, "fab_iterations": 50, "fab_targets": 3,
              "square_queries": 1000},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 poly for both networks, 100 epochs.
    # The paper does not give the batch size; 128 is our choice. Attacks on the whole test set.
    "paper": {"epochs": 100, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": None, "spsa_limit": 1000, "apgd_iterations": 100, "apgd_restarts": 1,
              "apgd_targets": 9, "fab_iterations": 100, "fab_targets": 9,
              "square_queries": 5000},
}
EPS_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


def parse_args(argv=None):
    from great_tf.defense import ALPHA_MAX, FGSM_TRAIN_EPS, MODES

    parser = flags.base_parser(
        "python -m trainers.defense", "Adversarial defense with GREAT/GREACE (Algorithm 1) and baselines.",
        datasets=None, methods=MODES, default_dataset="cifar10")
    parser.add_argument("--evaluate", metavar="PATH",
                        help="evaluate a saved model (a method's run folder or its model.keras), no training")
    parser.add_argument("--attacks", default="all", choices=("paper", "strong", "all"),
                        help="table columns: paper (Table 1), strong (APGD-CE, APGD-T, Square, AutoAttack "
                        "without FAB-T and the standard AA), "
                        "all (both, plus PGD, transfer and SPSA; default)")
    parser.add_argument("--eps", type=flags.nonnegative_float, help="attack eps (default: the paper's 0.1 cifar10, 0.2 svhn_cropped; 0.2 mnist and other "
                        "grayscale sets, 0.1 other colour sets)")
    parser.add_argument("--pixel-scale", type=flags.positive_float, default=1.0,
                        help="eps values are on the [0, PIXEL_SCALE] scale (default 1: images in [0, 1])")
    parser.add_argument("--iterations", type=flags.positive_int, default=10, help="iFGSM/PGD/SPSA steps k")
    parser.add_argument("--eps-iter", type=flags.positive_float, help="iterative step size (default 2.5 * eps / k)")
    parser.add_argument("--restarts", type=flags.positive_int, default=2, help="PGD random restarts")
    parser.add_argument("--attack-limit", type=flags.positive_int,
                        help="attack only the first N test images (preset: 200 small, all paper)")
    parser.add_argument("--spsa-limit", type=flags.positive_int, help="test images for SPSA (preset)")
    parser.add_argument("--spsa-samples", type=flags.positive_int, default=32,
                        help="SPSA random directions per step (each costs 2 forward passes)")
    parser.add_argument("--apgd-iterations", type=flags.positive_int,
                        help="APGD-CE/APGD-T iterations (preset: 20 small, 100 paper as AutoAttack)")
    parser.add_argument("--apgd-restarts", type=flags.positive_int,
                        help="APGD random restarts per target (preset: 1, as AutoAttack)")
    parser.add_argument("--apgd-targets", type=flags.positive_int,
                        help="APGD-T target classes, capped at classes - 1 (preset: 3 small, 9 paper)")
    parser.add_argument("--fab-iterations", type=flags.positive_int,
                        help="FAB-T iterations per target in AA (preset: 20 small, 100 paper as AutoAttack)")
    parser.add_argument("--fab-targets", type=flags.positive_int,
                        help="FAB-T target classes in AA, capped at classes - 1 (preset: 3 small, 9 paper)")
    parser.add_argument("--square-queries", type=flags.positive_int,
                        help="Square attack queries (preset: 500 small, 5000 paper as AutoAttack)")
    parser.add_argument("--eps-grid", type=flags.nonnegative_float, nargs="+",
                        help="eps values of the accuracy-against-eps plot (pixel scale as --eps; "
                        "default 0, 0.02, 0.05, 0.1, 0.2, 0.3 of the full range)")
    parser.add_argument("--alpha-max", type=flags.nonnegative_float, default=ALPHA_MAX)
    parser.add_argument("--beta-max", type=flags.nonnegative_float, help="default: 2 cifar10 and other colour sets, 10 svhn_cropped, mnist and other grayscale sets")
    parser.add_argument("--fgsm-train-eps", type=flags.nonnegative_float,
                        help="FGSM eps of adversarial training (pixel scale as --eps; default the "
                        "paper's 0.2 of the full range)")
    parser.add_argument("--surrogate", help="undefended model.keras for the transfer attack "
                        "(default: the baseline run in --logdir, if there is one)")
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "defense", args.dataset)
    # The defaults are fractions of the full range: on --pixel-scale 255 they scale with it
    # (else 0.2 would mean 0.2/255).
    if args.eps_grid is None:
        args.eps_grid = [e * args.pixel_scale for e in EPS_GRID]
    if args.fgsm_train_eps is None:
        args.fgsm_train_eps = FGSM_TRAIN_EPS * args.pixel_scale
    return args


def evaluate_saved(args):
    from great_tf.defense.runs import evaluate_saved as evaluate

    return evaluate(args)


def main(argv=None):
    from great_tf.defense.runs import check_args, load_data, train_method, write_reports
    from great_tf.defense import MODES

    args = parse_args(argv)
    flags.setup_runtime(args)
    if args.evaluate:
        return evaluate_saved(args)[0]
    check_args(args)
    methods = MODES if args.method == "all" else (args.method,)
    train, test = load_data(args)
    rows = [train_method(m, args, train, test) for m in methods]
    write_reports(rows, args)
    return rows


if __name__ == "__main__":
    flags.run_cli(main)
