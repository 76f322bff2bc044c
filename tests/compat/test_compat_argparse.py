"""The argparse set-ups of all 13 deq-zoo training scripts parse on eqkernels as on torchdeq.

Each script's own flags (transcribed from reading the script: names, types, defaults,
actions; help texts left out) are declared, then add_deq_args -- torchdeq's or ours; the
launch flags of its shell scripts / configs must parse to the same Namespace, and get_deq /
apply_norm must take that whole Namespace (the script's own names included, e.g.
eval_n_layer, eval_interval) and configure the same DEQ as torchdeq's."""
import argparse

import pytest
import torch
from torch import nn

import eqkernels.compat.torchdeq as compat

torchdeq = pytest.importorskip("torchdeq")
R = argparse.REMAINDER


def _network_spec(text):  # deq-inr's "--network_specs 1,256" entries
    return [int(v) for v in text.split(",")]


_TRANSFORMER_LM = [  # deq-seq/train.py and deq-lm/train.py share these
    ("--data", dict(type=str, default="../data/wikitext-103")),
    ("--dataset", dict(type=str, default="wt103", choices=["wt103"])),
    ("--n_head", dict(type=int, default=10)), ("--d_head", dict(type=int, default=50)),
    ("--d_embed", dict(type=int, default=-1)), ("--d_model", dict(type=int, default=500)),
    ("--d_inner", dict(type=int, default=8000)),
    ("--dropout", dict(type=float, default=0.0)), ("--dropatt", dict(type=float, default=0.0)),
    ("--init", dict(default="normal", type=str)), ("--emb_init", dict(default="normal", type=str)),
    ("--init_range", dict(type=float, default=0.05)),
    ("--emb_init_range", dict(type=float, default=0.01)),
    ("--init_std", dict(type=float, default=0.01)),
    ("--proj_init_std", dict(type=float, default=0.01)),
    ("--optim", dict(default="Adam", type=str, choices=["Adam", "SGD", "Adagrad", "RMSprop"])),
    ("--lr", dict(type=float, default=0.00025)), ("--warmup_step", dict(type=int, default=0)),
    ("--lr_min", dict(type=float, default=0.0)), ("--clip", dict(type=float, default=0.25)),
    ("--clip_nonemb", dict(action="store_true")), ("--max_step", dict(type=int, default=200000)),
    ("--batch_chunk", dict(type=int, default=1)), ("--tgt_len", dict(type=int, default=150)),
    ("--eval_tgt_len", dict(type=int, default=150)), ("--mem_len", dict(type=int, default=150)),
    ("--local_size", dict(type=int, default=0)), ("--not_tied", dict(action="store_true")),
    ("--eval", dict(action="store_true")), ("--adaptive", dict(action="store_true")),
    ("--div_val", dict(type=int, default=1)), ("--pre_lnorm", dict(action="store_true")),
    ("--varlen", dict(action="store_true")), ("--multi_gpu", dict(action="store_true")),
    ("--work_dir", dict(default="LM", type=str)), ("--resume_dir", dict(type=str, default="")),
    ("--debug", dict(action="store_true")), ("--same_length", dict(action="store_true")),
    ("--attn_type", dict(type=int, default=0)), ("--weight_decay", dict(type=float, default=0.0)),
    ("--max_eval_steps", dict(type=int, default=-1)), ("--resume_iter", dict(type=int, default=0)),
    ("--patience", dict(type=int, default=0)), ("--load_path", dict(type=str, default="")),
    ("--name", dict(type=str, default="N/A")),
]
_IGNN_NODE = [
    ("--fastmode", dict(action="store_true", default=False)),
    ("--lr", dict(type=float, default=0.01)), ("--dropout", dict(type=float, default=0.5)),
    ("--feature", dict(type=str, default="mul", choices=["mul", "cat", "adj"])),
    ("--normalization", dict(type=str, default="AugNormAdj", choices=["AugNormAdj"])),
    ("--degree", dict(type=int, default=2)), ("--per", dict(type=int, default=-1)),
]
_INR = [
    ("--prefix", dict(default="vanilla", type=str)),
    ("--experiment_id", dict(default="vanilla", type=str)),
    ("-c", "--config_file", dict(default=None)), ("--device", dict(default="cuda")),
    ("--lr", dict(default=0.001, type=float)),
]

# script: (its own flags, launch flag sets from its shell scripts / configs)
SCRIPTS = {
    "deq-seq/train.py": (_TRANSFORMER_LM + [
        ("--n_layer", dict(type=int, default=12)), ("--eval_n_layer", dict(type=int, default=12)),
        ("--scheduler", dict(default="cosine", type=str,
                             choices=["cosine", "inv_sqrt", "dev_perf", "constant"])),
        ("--decay_rate", dict(type=float, default=0.5)),
        ("--batch_size", dict(type=int, default=60)), ("--seed", dict(type=int, default=42)),
        ("--log-interval", dict(type=int, default=200)),
        ("--eval-interval", dict(type=int, default=4000)),
        ("--eta_min", dict(type=float, default=0.0)), ("--gpu0_bsz", dict(type=int, default=-1)),
    ], [  # deq_seq_ift.sh, deq_seq_ift_jr.sh
        "--data data/wikitext-103/ --dataset wt103 --adaptive --div_val 4 --n_layer 2 "
        "--eval_n_layer 24 --d_embed 700 --d_model 700 --n_head 10 --d_head 70 --d_inner 48000 "
        "--dropout 0.05 --dropatt 0.0 --optim Adam --lr 0.00025 --warmup_step 16000 "
        "--eval-interval 5000 --max_step 300000 --tgt_len 150 --mem_len 150 --eval_tgt_len 150 "
        "--norm_type weight_norm --ift --f_solver broyden --b_solver broyden --f_stop_mode rel "
        "--b_stop_mode rel --f_tol 1e-3 --b_tol 1e-3 --f_max_iter 35 --b_max_iter 35 "
        "--jac_loss_weight {w} --jac_loss_freq {f} --jac_incremental {i} --batch_size 56 "
        "--gpu0_bsz 14 --multi_gpu".format(w=w, f=f, i=i)
        for w, f, i in ((0.0, 0.0, 0), (0.1, 0.4, 30000))]),
    "deq-lm/train.py": (_TRANSFORMER_LM + [
        ("--n_layer", dict(type=int, default=3)),
        ("--scheduler", dict(default="cosine", type=str, choices=["cosine"])),
        ("--global_batch_size", dict(type=int, default=60)),
        ("--global_eval_batch_size", dict(type=int, default=16)),
        ("--mem", dict(action="store_true")), ("--global_seed", dict(type=int, default=42)),
        ("--log_interval", dict(type=int, default=200)),
        ("--eval_interval", dict(type=int, default=4000)),
    ], [  # run.sh
        "--data data/wikitext-103/ --dataset wt103 --adaptive --div_val 4 --n_layer 3 "
        "--d_embed 700 --d_model 700 --n_head 10 --d_head 70 --d_inner 14800 --dropout 0.05 "
        "--dropatt 0.0 --optim Adam --lr 0.00025 --warmup_step 8000 --eval_interval 5000 "
        "--max_step 150000 --tgt_len 150 --mem_len 150 --eval_tgt_len 150 --norm_type "
        "weight_norm --f_solver fixed_point_iter --f_stop_mode rel --f_tol 1e-3 --f_max_iter 0 "
        "--grad 12 --mem --eval_f_max_iter 12 --global_batch_size 56"]),
    "mdeq/mdeq_cifar/main.py": ([
        ("--cfg", dict(required=True, type=str)), ("--eval", dict(action="store_true")),
        ("--repeat", "-r", dict(default=1, type=int)),
        ("--exp_id", dict(type=str, default="cifar_mdeq")),
        ("--log_dir", dict(type=str, default="")), ("--data_dir", dict(type=str, default="")),
        ("--test_model", dict(type=str, default="")), ("opts", dict(default=None, nargs=R)),
    ], [  # run.sh, run_small.sh
        "--cfg ./configs/large.yaml --norm_type weight_norm --f_solver broyden --f_max_iter 18 "
        "--grad 5 --tau 0.7 --exp_id large",
        "--cfg ./configs/small.yaml --norm_type weight_norm --f_solver broyden --f_max_iter 22 "
        "--grad 5 --tau 0.5 --exp_id small"]),
    "mdeq/mdeq_imagenet/train_mdeq_imagenet.py": ([
        ("--eval", dict(action="store_true")), ("--start-epoch", dict(default=0, type=int)),
        ("--print-freq", dict(default=50, type=int)), ("--data", dict(default="./data")),
        ("--num-classes", dict(default=1000, type=int)),
        ("-j", "--workers", dict(default=4, type=int)),
        ("--batch-size", dict(default=64, type=int)),
        ("--lr", "--learning-rate", dict(type=float, default=0.1)),
        ("--nesterov", dict(action="store_true")), ("--epochs", dict(type=int, default=120)),
        ("--wd", "--weight-decay", dict(type=float, default=0.0001)),
        ("--imsize", dict(default=256, type=int)), ("--imcrop", dict(default=224, type=int)),
        ("--warmup", dict(default=5, type=int)), ("--momentum", dict(default=0.9, type=float)),
        ("--resume", dict(default=None, type=str)),
        ("--save-path", dict(default="results/tmp", type=str)),
        ("--local_rank", dict(default=0, type=int)), ("--dali-cpu", dict(action="store_true")),
    ], [  # run_mdeq.sh
        "--data YOUR_DATA_PATH --save-path ./log_dir --workers 8 --batch-size 64 "
        "--learning-rate 0.05 --nesterov --epochs 100 --wd 0.00005 --warmup 0 --f_max_iter 26 "
        "--f_solver fixed_point_iter --grad 5 --norm_type weight_norm"]),
    "deq-inr/scripts/train_2d_image.py": (_INR + [
        ("--dataset", dict(default="nature", choices=["camera", "celeba", "nature", "text"])),
        ("--log_dir", dict(default=None, type=str)),
        ("--batch_size", dict(default=-1, type=int)),
        ("--lr_decay", dict(default=1.0, type=float)),
        ("--filters", dict(default=["fourier", "gabor", "siren_like"], nargs="+", type=str)),
        ("--network_specs", dict(default=[[1, 256], [1, 512], [4, 256]], nargs="+",
                                 type=_network_spec)),
        ("--input_scale", dict(default=256.0, type=float)),
        ("--no_skip_solver", dict(default=False, action="store_true")),
        ("--max_train_iters", dict(default=2000, type=int)),
        ("--log_freq", dict(default=50, type=int)),
        ("--verbose", dict(default=False, action="store_true")),
        ("--continue_run", dict(default=False, action="store_true")),
    ], [  # configs/image_representation/*_camera.yaml, image_generalization/*_nature.yaml
        "--batch_size -1 --dataset camera --lr 0.001 --lr_decay 1. --device cuda --filters "
        "fourier gabor siren_like --network_specs 1,256 1,512 4,256 --input_scale 256. "
        "--f_solver fixed_point_iter --f_max_iter 100 --grad 3 --max_train_iters 5000 "
        "--log_freq 50",
        "--dataset nature --f_solver fixed_point_iter --f_max_iter 20 --f_stop_mode abs "
        "--f_tol 0.001 --grad 3 --n_states 2 --norm_type weight_norm"]),
    "deq-inr/scripts/train_audio.py": (_INR + [
        ("--dataset", dict(default="bach", choices=["counting", "bach"])),
        ("--inference", dict(default=False, action="store_true")),
        ("--restore_path", dict(default=None, type=str)),
        ("--max_train_iters", dict(default=3000, type=int)),
        ("--vis_freq", dict(default=500, type=int)), ("--log_freq", dict(default=500, type=int)),
        ("--save_freq", dict(default=500, type=int)),
        ("--grad_accum_steps", dict(default=1, type=int)),
        ("--model_type", dict(default="implicit", choices=["implicit", "siren", "ffn"])),
        ("--n_layers", dict(default=4, type=int)),
        ("--interm_channels", dict(default=128, type=int)),
        ("--use_implicit", dict(default=False, action="store_true")),
        ("--input_scale", dict(default=25000.0, type=float)),
        ("--filter_type", dict(default="fourier", choices=["fourier", "gabor", "siren_like"])),
        ("--gabor_alpha", dict(default=3.0, type=float)),
    ], [  # configs/audio/DEQ-siren_like-1L512D.yaml
        "--dataset bach --model_type implicit --n_layers 1 --interm_channels 512 "
        "--filter_type siren_like --f_solver fixed_point_iter --f_max_iter 100 --f_stop_mode "
        "rel --f_tol 1e-6 --grad 3 --norm_type weight_norm"]),
    "deq-inr/scripts/train_video.py": (_INR + [
        ("--dataset", dict(default="cat", choices=["bikes", "cat"])),
        ("--inference", dict(default=False, action="store_true")),
        ("--restore_path", dict(default=None, type=str)),
        ("--vis_freq", dict(default=2000, type=int)), ("--log_freq", dict(default=2000, type=int)),
        ("--save_freq", dict(default=2000, type=int)),
        ("--max_train_iters", dict(default=10000, type=float)),
        ("--model_type", dict(default="implicit", choices=["implicit", "siren", "ffn"])),
        ("--n_layers", dict(default=1, type=int)),
        ("--interm_channels", dict(default=1024, type=int)),
        ("--use_implicit", dict(default=False, action="store_true")),
        ("--input_scale", dict(default=256.0, type=float)),
        ("--filter_type", dict(default="fourier", choices=["fourier", "gabor", "siren_like"])),
        ("--gabor_alpha", dict(default=3.0)),
        ("--accelerated_training_iter", dict(default=1, type=int)),
        ("--train_batch_size", dict(default=256 * 256, type=int)),
        ("--test_batch_size", dict(default=256 * 256, type=int)),
    ], [  # configs/video/DEQ-siren_like-1L2048D.yaml
        "--dataset cat --model_type implicit --n_layers 1 --interm_channels 2048 --filter_type "
        "siren_like --f_solver fixed_point_iter --f_max_iter 100 --f_stop_mode abs --f_tol "
        "0.001 --grad 3"]),
    "deq-flow/main.py": ([
        ("--eval", dict(action="store_true")), ("--test", dict(action="store_true")),
        ("--viz", dict(action="store_true")), ("--fixed_point_reuse", dict(action="store_true")),
        ("--warm_start", dict(action="store_true")), ("--name", dict(default="deq-flow")),
        ("--stage", dict()), ("--total_run", dict(type=int, default=1)),
        ("--start_run", dict(type=int, default=1)), ("--restore_name", dict()),
        ("--resume_iter", dict(type=int, default=-1)), ("--tiny", dict(action="store_true")),
        ("--large", dict(action="store_true")), ("--huge", dict(action="store_true")),
        ("--gigantic", dict(action="store_true")), ("--old_version", dict(action="store_true")),
        ("--restore_ckpt", dict()), ("--validation", dict(type=str, nargs="+")),
        ("--test_set", dict(type=str, nargs="+")), ("--viz_set", dict(type=str, nargs="+")),
        ("--viz_split", dict(type=str, nargs="+", default=["test"])),
        ("--output_path", dict()), ("--eval_interval", dict(type=int, default=5000)),
        ("--save_interval", dict(type=int, default=5000)), ("--gma", dict(action="store_true")),
        ("--lr", dict(type=float, default=2e-05)), ("--num_steps", dict(type=int, default=100000)),
        ("--batch_size", dict(type=int, default=6)),
        ("--image_size", dict(type=int, nargs="+", default=[384, 512])),
        ("--gpus", dict(type=int, nargs="+", default=[0, 1])),
        ("--schedule", dict(type=str, default="onecycle")),
        ("--mixed_precision", dict(action="store_true")),
        ("--wdecay", dict(type=float, default=5e-05)),
        ("--epsilon", dict(type=float, default=1e-08)),
        ("--clip", dict(type=float, default=1.0)), ("--dropout", dict(type=float, default=0.0)),
        ("--vdropout", dict(type=float, default=0.0)), ("--add_noise", dict(action="store_true")),
        ("--active_bn", dict(action="store_true")), ("--all_grad", dict(action="store_true")),
    ], [  # train_B.sh, train_H.sh, val.sh
        "--total_run 1 --start_run 1 --name deq-flow-B-C-36-6-1 --stage chairs --validation "
        "chairs kitti --gpus 0 1 --num_steps 120000 --eval_interval 20000 --batch_size 12 --lr "
        "0.0004 --image_size 368 496 --wdecay 0.0001 --f_max_iter 36 --f_solver "
        "simple_fixed_point_iter --n_states 6 --grad 1",
        "--total_run 1 --start_run 1 --name deq-flow-B-T-40-2-3 --stage things --validation "
        "sintel kitti --restore_name deq-flow-B-C-36-6-1 --gpus 0 1 --num_steps 120000 "
        "--batch_size 6 --lr 0.000125 --image_size 400 720 --wdecay 0.0001 --f_max_iter 40 "
        "--f_solver simple_fixed_point_iter --n_states 2 --grad 3 --all_grad",
        "--total_run 1 --start_run 1 --name deq-flow-H-120k-T-40-2-3 --stage things "
        "--validation sintel kitti --restore_name deq-flow-H-120k-C-36-6-1 --gpus 0 1 2 "
        "--num_steps 120000 --batch_size 6 --lr 0.000125 --image_size 400 720 --wdecay 0.0001 "
        "--f_max_iter 40 --f_solver simple_fixed_point_iter --n_states 2 --grad 3 --huge "
        "--all_grad",
        "--eval --name deq-flow-H-things --stage things --validation kitti sintel "
        "--restore_ckpt val_checkpoints/deq-flow-H-things-test-3x.pth --gpus 0 --f_max_iter 40 "
        "--f_solver fixed_point_iter --eval_factor 3.0 --huge"]),
    "ignn/nodeclassification/train_IGNN_PPI.py": (_IGNN_NODE + [
        ("--id", dict(type=str, default="torchdeq")),
        ("--eval", dict(action="store_true", default=False)),
        ("--seed", dict(type=int, default=0)), ("--epochs", dict(type=int, default=1000)),
        ("--resume_path", dict(type=str, default="")),
        ("--resume_epoch", dict(type=int, default=0)),
        ("--weight_decay", dict(type=float, default=0)),
        ("--hidden", dict(type=int, default=256)), ("--kappa", dict(type=float, default=0.98)),
        ("--dataset", dict(type=str, default="cora")),
    ], [  # run_ignn.sh
        "--f_solver fixed_point_iter --norm_type spectral_norm --norm_clip --grad 5 --tau 0.5"]),
    "ignn/nodeclassification/train_IGNN_amazon.py": (_IGNN_NODE + [
        ("--no-cuda", dict(action="store_true", default=False)),
        ("--seed", dict(type=int, default=2333)), ("--epochs", dict(type=int, default=5000)),
        ("--weight_decay", dict(type=float, default=0)),
        ("--hidden", dict(type=int, default=128)), ("--kappa", dict(type=float, default=0.95)),
        ("--dataset", dict(type=str, default="amazon-all")),
        ("--portion", dict(type=float, default=0.06)),
        ("--experiment", dict(type=str, default="base-experiment")),
    ], [""]),
    "ignn/nodeclassification/train_IGNN_chains.py": (_IGNN_NODE + [
        ("--seed", dict(type=int, default=42)), ("--epochs", dict(type=int, default=2000)),
        ("--weight_decay", dict(type=float, default=0.0005)),
        ("--hidden", dict(type=int, default=16)), ("--kappa", dict(type=float, default=0.9)),
        ("--dataset", dict(type=str, default="chains-10")),
        ("--experiment", dict(type=str, default="base-experiment")),
    ], [""]),
    "ignn/graphclassification/train.py": ([
        ("--seed", dict(type=int, default=42)), ("--epochs", dict(type=int, default=200)),
        ("--lr", dict(type=float, default=0.01)), ("--weight_decay", dict(type=float, default=0)),
        ("--hidden", dict(type=int, default=64)), ("--dropout", dict(type=float, default=0.5)),
        ("--kappa", dict(type=float, default=0.9)),
        ("--dataset", dict(type=str, default="PROTEINS")),
        ("--fold_idx", dict(type=int, default=0)),
    ], [  # train_ignn.sh
        "--f_solver fixed_point_iter --norm_type none --grad 5 --tau 0.5"]),
    "deq-ddim/main.py": ([
        ("--config", dict(type=str, required=True)), ("--seed", dict(type=int, default=1234)),
        ("--exp", dict(type=str, default="exp")), ("--doc", dict(type=str, required=True)),
        ("--comment", dict(type=str, default="")), ("--verbose", dict(type=str, default="info")),
        ("--test", dict(action="store_true")), ("--sample", dict(action="store_true")),
        ("--fid", dict(action="store_true")), ("--interpolation", dict(action="store_true")),
        ("--resume_training", dict(action="store_true")),
        ("-i", "--image_folder", dict(type=str, default="images")),
        ("--ni", dict(action="store_true")), ("--use_pretrained", dict(action="store_true")),
        ("--sample_type", dict(type=str, default="generalized")),
        ("--skip_type", dict(type=str, default="uniform")),
        ("--timesteps", dict(type=int, default=1000)), ("--eta", dict(type=float, default=0.0)),
        ("--sequence", dict(action="store_true")), ("--model", dict(type=str, default="Diffusion")),
        ("--method", dict(type=str, default="default")), ("--ls_opt", dict(action="store_true")),
        ("--lambda1", dict(type=float, default=1)), ("--lambda2", dict(type=float, default=0)),
        ("--lambda3", dict(type=float, default=0)), ("--use_wandb", dict(action="store_true")),
        ("--no_augmentation", dict(action="store_true")), ("--recons", dict(action="store_true")),
    ], [  # scripts/invert_models_deq.sh
        "--config cifar10_ls_opt.yml --model DiffusionInversion --exp cifar10-orig-exp "
        "--image_folder cifar10-inverse-t1000-parallel-f-15 --doc cifar10-torchdeq-f-15 "
        "--ls_opt --timesteps 1000 --ni --method default --lambda1 1 --lambda2 0 --lambda3 0 "
        "--f_solver anderson --f_max_iter 15 --tau 0.1 --use_wandb --no_augmentation "
        "--use_pretrained --skip_type quad --seed 7"]),
}
# Required options a bare parse needs.
_REQUIRED = {"mdeq/mdeq_cifar/main.py": "--cfg x.yaml", "deq-ddim/main.py": "--config c --doc d"}


def _parser(script, lib):
    parser = argparse.ArgumentParser(prog=script)
    own, _ = SCRIPTS[script]
    for *flags, kwargs in own:
        parser.add_argument(*flags, **kwargs)
    lib.add_deq_args(parser)
    return parser


def _cases():
    for script, (_, launches) in SCRIPTS.items():
        for i, argv in enumerate(launches + [_REQUIRED.get(script, "")]):
            yield pytest.param(script, argv, id=f"{script}-{i}")


def test_all_thirteen_training_scripts_are_covered():
    assert len(SCRIPTS) == 13


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.conv = nn.Conv2d(2, 2, 3)


@pytest.mark.parametrize("script, argv", list(_cases()))
def test_script_parser_and_get_deq_as_torchdeq(script, argv):
    theirs = _parser(script, torchdeq).parse_args(argv.split())
    ours = _parser(script, compat).parse_args(argv.split())
    assert vars(ours) == vars(theirs)
    ref, deq = torchdeq.get_deq(theirs), compat.get_deq(ours)  # the whole Namespace
    assert type(deq).__name__ == type(ref).__name__
    for key in ("f_max_iter", "b_max_iter", "f_tol", "b_tol", "f_stop_mode", "eval_f_max_iter",
                "indexing", "no_stat"):
        assert getattr(deq, key) == getattr(ref, key), key
    assert len(deq.produce_grad) == len(ref.produce_grad)
    blocks = {}
    for lib, args in ((torchdeq, theirs), (compat, ours)):
        torch.manual_seed(0)
        block = _Block()
        lib.apply_norm(block, args=args)
        lib.reset_norm(block)
        blocks[lib] = block
    assert blocks[compat].state_dict().keys() == blocks[torchdeq].state_dict().keys()
    x = torch.randn(3, 4)
    torch.testing.assert_close(blocks[compat].lin(x), blocks[torchdeq].lin(x))


def test_a_registered_solver_parses_and_builds(capsys):
    def newton(func, x0, max_iter=50, tol=1e-3, stop_mode="abs", indexing=None, **kwargs):
        z = func(x0)
        return z, [z], compat.solver_stat_from_final_step(x0, z)
    compat.register_solver("newton_for_parse", newton)
    args = _parser("deq-flow/main.py", compat).parse_args(
        "--b_solver newton_for_parse --f_solver newton_for_parse".split())
    deq = compat.get_deq(args)
    assert deq.f_solver is newton and deq.b_solver is newton
    with pytest.raises(SystemExit):  # torchdeq's own --b_solver has choices=
        _parser("deq-flow/main.py", torchdeq).parse_args(["--b_solver", "newton_for_parse"])
