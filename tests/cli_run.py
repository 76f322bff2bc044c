"""Run a command-line entry point in this process, as the CLI tests do."""


def run_cli(main, argv, capsys):
    """(exit code, stdout, stderr) of main(argv); SystemExit's code, 0 when it returns."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
