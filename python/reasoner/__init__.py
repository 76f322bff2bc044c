"""The equilibrium reasoner (EqR's model, locuslab/EqR) for any task of fixed-length token
sequences: python/sudoku and python/maze are its tasks.

  reasoner.model            ReasonerConfig, Reasoner: the looped model on eqkernels' update
                            (token-MLP or attention token mixing), its kernel paths
  reasoner.task             Task: what a task supplies (data, augmentation, scoring, defaults)
  reasoner.checkpoint       load_model / build_model: our checkpoints and EqR's .pth
  reasoner.eqr_checkpoint   EqR's config, parameter names and EMA weights
  reasoner.checkpoint_file  read_file: torch.load without running code from the file
  reasoner.losses           EqR's loss (stablemax cross-entropy + halting BCE)
  reasoner.train            TrainConfig, Trainer: deep supervision, EMA, exact resume
  reasoner.reasoning        reasoning_steps: the evaluation loop (halting, compaction, graphs)
  reasoner.evaluate         evaluate: depth x breadth over the examples (sharded under torchrun)
  reasoner.report           aggregation (vote, lowest residual, pass@B), table, plot
  reasoner.distributed      torchrun set-up
  reasoner.train_cli, reasoner.eval_cli   `python -m <task> train | eval`
Import submodules directly; this file imports nothing.
"""
