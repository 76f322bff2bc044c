"""Safety helpers shared by the command-line tools under python/ (sudoku, maze, domains), one job per
module, so a training tool never loses or mixes up its state and bad input gets one clear
error before any work:

  values        Range: a numeric option's valid range, as an argparse type and a check
  devices       parse_device: --device text -> a device that exists here, or ValueError
  output_paths  check_output_file / check_output_dir: writable, right kind, right extension
  atomic_files  atomic_write / atomic_path: temp file + os.replace, never half-written
  run_dir       plan_run_dir: --resume / --resume-if-exists / --overwrite of a run folder;
                cut_log: a metrics log cut back to a checkpoint's step
  exits         run_cli / error_exit: bad input -> `error: ...` and exit 2, Ctrl-C -> 130
  stop_signal   StopOnSignal: SIGINT/SIGTERM become a stop request acted on at a step
                boundary, agreed by every rank under torch.distributed

Errors are ValueError naming the flag; the CLIs print them as `error: ...` and exit 2.
"""
