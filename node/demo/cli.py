"""`exchange-node demo storm` and `exchange-node demo failures`."""
from __future__ import annotations

from pathlib import Path

import click
import orjson


def register(cli: click.Group) -> None:
    @cli.group("demo")
    def demo() -> None:
        """Run the design's stories on real local processes (they start and stop their own nodes)."""

    @demo.command("storm")
    @click.option("--modes", default="off,on", show_default=True,
                  help="Protection modes to run, in order (off, shadow, on).")
    @click.option("--pending", type=click.IntRange(1, 20_000), default=2000, show_default=True,
                  help="Requests pending when the node restarts.")
    @click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where the demo nodes keep their data (default: a new temporary directory).")
    @click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
    def storm(modes: str, pending: int, work_dir: Path | None, as_json: bool) -> None:
        """A node restarts with thousands of pending requests to a service of limited capacity:
        once with storm protection off, once on. Prints peak rate, error rate, p95 latency,
        breaker changes, the rate limit in force, delivery and time to deliver everything."""
        from node.demo.storm import render, run_storm

        chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
        bad = [m for m in chosen if m not in ("off", "shadow", "on")]
        if bad or not chosen:
            raise click.BadParameter(f"unknown mode(s) {', '.join(bad) or '(none)'}; use off, shadow, on",
                                     param_hint="--modes")
        say = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
        report = run_storm(work_dir, chosen, pending, say=say)
        click.echo(orjson.dumps(report).decode() if as_json else render(report))

    @demo.command("failures")
    @click.option("--scenarios", default="crash,slow,flaky,false_gossip,grape_crash", show_default=True,
                  help="Scenarios to run, in order.")
    @click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where the demo nodes keep their data (default: a new temporary directory).")
    @click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
    def failures(scenarios: str, work_dir: Path | None, as_json: bool) -> None:
        """Crash, slow, flaky, false gossip and Grape crash against live workers: time to detect, to
        route away, for hints to spread, and to recover, measured on the processes."""
        from node.demo.failures import SCENARIOS, render, run_failures

        chosen = tuple(s.strip() for s in scenarios.split(",") if s.strip())
        known = (*SCENARIOS, "grape_crash")
        bad = [s for s in chosen if s not in known]
        if bad or not chosen:
            raise click.BadParameter(f"unknown scenario(s) {', '.join(bad) or '(none)'}; use {', '.join(known)}",
                                     param_hint="--scenarios")
        say = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
        report = run_failures(work_dir, chosen, say=say)
        click.echo(orjson.dumps(report).decode() if as_json else render(report))
