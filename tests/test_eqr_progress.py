"""eqkernels.progress: plain lines (not carriage-return frames) when stderr is not a terminal."""
import io

from eqkernels.progress import PlainProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_non_tty_prints_a_line_per_percent_step_and_at_the_end():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="eval", unit="step", file=out, interval=1e9, percent=25)
    assert isinstance(bar, PlainProgress)
    for _ in range(999):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4, lines  # 25%, 50%, 75%, then the close at 999
    assert lines[0].startswith("eval: 250/1000 step (25%)")
    assert lines[-1].startswith("eval: 999/1000 step (100%)") and lines[-1].endswith("loss=0.5")


def test_non_tty_time_interval_and_disable():
    out = io.StringIO()
    bar = progress_bar(desc="train", file=out, interval=0.0)  # no total: by time only
    bar.update(3)
    bar.update(2)
    bar.close()
    assert out.getvalue().splitlines() == [l for l in out.getvalue().splitlines() if l.startswith("train: ")]
    assert len(out.getvalue().splitlines()) == 2
    quiet = io.StringIO()
    bar = progress_bar(total=10, file=quiet, disable=True, interval=0.0)
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""


def test_tty_gets_tqdm():
    from tqdm.auto import tqdm
    bar = progress_bar(total=5, file=_Tty())
    assert isinstance(bar, tqdm)
    bar.close()
