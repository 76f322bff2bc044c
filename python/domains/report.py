"""A scaling run's table (Markdown + JSON) and its PNG (quality and Lipschitz vs iterations)."""
from __future__ import annotations

import json
import os
from typing import List, Optional

from cli_safety.atomic_files import atomic_path, atomic_write
from domains.domain import Domain, RunConfig


def write_report(domain: Domain, cfg: RunConfig, rows: List[dict], train_log: List[dict],
                 out_dir: str, *, device: str, seconds: float,
                 reference: Optional[dict] = None) -> dict:
    """Writes {name}.md, {name}.json and {name}.png under out_dir (each atomically: the old
    file or the whole new one); returns their paths.
    `reference`: the Lipschitz estimate of the domain's exact map, where it has one."""
    paths = report_paths(out_dir, domain.name)
    with atomic_write(paths["json"]) as fh:
        json.dump(dict(domain=domain.name, metric=domain.metric, device=device,
                       seconds=seconds, config=cfg.__dict__, train_log=train_log,
                       rows=rows, reference_lipschitz=reference), fh, indent=1)
    with atomic_write(paths["table"]) as fh:
        fh.write(markdown_table(domain, cfg, rows, train_log, device=device, seconds=seconds,
                                reference=reference))
    with atomic_path(paths["plot"]) as tmp:
        plot(domain, cfg, rows, tmp, reference=reference)
    return paths


def report_paths(out_dir: str, name: str) -> dict:
    """Where write_report puts domain `name`'s table, JSON and plot (the CLI checks them first)."""
    base = os.path.join(out_dir, name)
    return dict(table=base + ".md", json=base + ".json", plot=base + ".png")


def markdown_table(domain: Domain, cfg: RunConfig, rows: List[dict], train_log: List[dict],
                   *, device: str, seconds: float, reference: Optional[dict] = None) -> str:
    named = {"quality": domain.metric, "quality_hard": domain.metric + " (hard)"}
    metric_keys = [k for k in rows[0] if k not in ("iters", "step_norm") and
                   not k.startswith(("lipschitz", "train_"))]
    headers = [named.get(k, k.replace("_hard", " (hard)").replace("_", " ")) for k in metric_keys]
    lines = [f"# {domain.name}: test-time scaling",
             "",
             f"Trained {cfg.train_steps} steps at {cfg.train_iters} iterations on {cfg.n_train} "
             f"instances (loss {train_log[0]['loss']:.4g} -> {train_log[-1]['loss']:.4g}); "
             f"evaluated on {cfg.n_test} fresh ones. Device: {device}; {seconds:.0f} s in all.",
             "Lipschitz: largest (and median) ||F(u') - F(u)|| / ||u' - u|| over "
             f"{cfg.lipschitz_samples} inputs x {cfg.lipschitz_directions} random directions, "
             f"||u' - u|| = {cfg.lipschitz_eps:g} ||u||. Step norm: median ||z_k - z_(k-1)||.",
             "(train): the training depth. (train fwd): the block applications behind a "
             "training prediction, the training depth plus the steps the backward mode records."]
    if reference is not None:
        lines.append(f"The exact map (the data generator) on the same perturbations: Lipschitz "
                     f"max {reference['lipschitz_max']:.4g}, median "
                     f"{reference['lipschitz_median']:.4g}.")
    lines += ["",
              "| iterations | " + " | ".join(headers)
              + " | Lipschitz max | Lipschitz median | step norm |",
              "|---:|" + "---:|" * len(headers) + "---:|---:|---:|"]
    for r in rows:
        marks = [name for name, key in (("train", "train_depth"),
                                        ("train fwd", "train_forward_depth")) if r.get(key)]
        mark = f" ({', '.join(marks)})" if marks else ""
        cells = [f"{r['iters']}{mark}"] + [f"{r[k]:.4g}" for k in metric_keys]
        cells += [f"{r['lipschitz_max']:.4g}", f"{r['lipschitz_median']:.4g}",
                  f"{r['step_norm']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(domain: Domain, cfg: RunConfig, rows: List[dict], path: str, *,
         reference: Optional[dict] = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iters = [r["iters"] for r in rows]
    fig, (ax_q, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    ax_q.plot(iters, [r["quality"] for r in rows], "o-", label="test")
    if "quality_hard" in rows[0]:
        ax_q.plot(iters, [r["quality_hard"] for r in rows], "s--", label="hard")
    ax_q.set_ylabel(domain.metric)
    ax_l.plot(iters, [r["lipschitz_max"] for r in rows], "o-", color="C3", label="max")
    ax_l.plot(iters, [r["lipschitz_median"] for r in rows], "s--", color="C1", label="median")
    if reference is not None:
        ax_l.axhline(reference["lipschitz_max"], color="k", lw=1.0, ls="-.",
                     label="exact map, max")
    ax_l.set_ylabel("empirical Lipschitz constant")
    ax_l.set_yscale("log")
    for ax in (ax_q, ax_l):
        ax.set_xscale("log")
        ax.set_xlabel("test-time iterations")
        for r in rows:
            if r.get("train_depth") or r.get("train_forward_depth"):
                ax.axvline(r["iters"], color="gray", lw=0.8, ls=":")
        ax.legend()
    fig.suptitle(f"{domain.name}: quality and input->output Lipschitz vs iterations "
                 f"(dotted: training depth, training forward depth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
