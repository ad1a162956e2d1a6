"""Step 1's branch "Add servers" (`a` on the Hardware step): one model across this machine and
other servers with llama.cpp's RPC backend.

The person types the other servers; the session parses them (this machine first: it is the
head) and plans the cluster in a thread worker, since detection over SSH and the link measure
take seconds. The plan is shown in the words of tui/cluster/text.py (the same as `cluster plan`
and plain mode), with the `llama-wizard cluster up` command to copy (y), and "Start the cluster"
(u) runs the runtime's cluster_up in a worker, each progress line appended below the plan."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text
from llama_wizard.tui.widgets import CommandText

if TYPE_CHECKING:
    from llama_wizard.tui.cluster.plan import ClusterPlan

PROMPT = "Other servers: SSH destinations or sim:PROFILE, separated by spaces"


@dataclass
class Planned(Message):
    ticket: int
    hosts: list[str]
    plan: ClusterPlan


@dataclass
class PlanFailed(Message):
    ticket: int
    error: ActionableError


@dataclass
class UpEvent(Message):
    host: str
    text: str


@dataclass
class UpDone(Message):
    url: str | None
    error: ActionableError | None


class ClusterScreen(WizardStep):
    """Pushed over the Hardware step; escape goes back to it, the plan stays behind."""

    STEP = "hardware"
    CSS_PATH = "cluster.tcss"
    BINDINGS = [  # noqa: RUF012
        # Back to the Hardware step (popped, not the app's previous step: there is none).
        Binding("escape", "back", "Back"),
        Binding("y", "copy", "Copy"),
        Binding("u", "start", "Start"),
    ]

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.initial = text
        self.hosts: list[str] = []
        self.plan: ClusterPlan | None = None
        self.command: list[str] = []
        # Each Enter plans afresh; an answer to an older Enter is dropped, not shown.
        self.ticket = 0
        self.planning = False
        self.starting = False
        self.progress: list[str] = []

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Static(
            f"{PROMPT}. This machine is the head. Enter plans; escape goes back.",
            id="cluster-intro",
            markup=False,
        )
        with Horizontal(classes="form-row"):
            yield Label("Servers", classes="form-label")
            yield Input(value=self.initial, placeholder="user@gpu2 gpu3 sim:2x-mi50", id="hosts")
        yield Static("", id="cluster-status", markup=False)
        with VerticalScroll(id="cluster-view"):
            yield Static("", id="cluster-plan", markup=False)
            yield Static("", id="cluster-progress", markup=False)
        yield CommandText(id="cluster-command")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.sub_title = "Add servers" + (" (simulated)" if self.session.simulated else "")
        # Typing the servers is what this screen is for: the field has the focus.
        self.query_one("#hosts", Input).focus()

    # --- what is shown -------------------------------------------------------------------------

    def _status(self, text: str) -> None:
        self.query_one("#cluster-status", Static).update(text)

    def status_text(self) -> str:
        return str(self.query_one("#cluster-status", Static).content)

    def plan_text(self) -> str:
        return str(self.query_one("#cluster-plan", Static).content)

    def progress_text(self) -> str:
        return str(self.query_one("#cluster-progress", Static).content)

    # --- planning ------------------------------------------------------------------------------

    @on(Input.Submitted, "#hosts")
    def submitted(self, event: Input.Submitted) -> None:
        try:
            hosts = self.session.cluster_hosts(event.value)
        except ActionableError as error:
            # Shown until the next Enter: the person reads the fix and types again.
            self._status(error_text(error))
            return
        from llama_wizard.tui.cluster.hosts import parse_hosts

        remote = sum(1 for spec in parse_hosts(hosts) if spec.kind == "ssh")
        over = f" ({remote} over SSH)" if remote else ""
        self._status(f"Detecting {len(hosts)} hosts{over}…")
        self.ticket += 1
        self.planning = True
        # The keys act on the screen meanwhile (u says it is planning); Tab goes back to typing.
        self.query_one("#cluster-view", VerticalScroll).focus()
        self.make_plan(self.ticket, hosts)

    @work(thread=True, group="cluster-plan")
    def make_plan(self, ticket: int, hosts: list[str]) -> None:
        # Computes only; what is shown changes in the handlers, on the UI thread.
        try:
            plan = self.session.plan_cluster(hosts)
        except ActionableError as error:
            self.post_message(PlanFailed(ticket, error))
            return
        self.post_message(Planned(ticket, hosts, plan))

    def on_plan_failed(self, message: PlanFailed) -> None:
        if message.ticket != self.ticket:
            return
        self.planning = False
        self._status(error_text(message.error))
        self.query_one("#hosts", Input).focus()  # to type the servers again

    def on_planned(self, message: Planned) -> None:
        if message.ticket != self.ticket:
            return
        from llama_wizard.tui.cluster.text import plan_lines

        self.planning = False
        self.hosts, self.plan = message.hosts, message.plan
        self.command = self.session.cluster_command("up", message.hosts)
        self.query_one("#cluster-plan", Static).update("\n".join(plan_lines(message.plan)))
        self.query_one("#cluster-command", CommandText).show(shlex.join(self.command), "sh")
        self._status(f"{self._verdict(message.plan)} y copies the command below; u starts it.")
        view = self.query_one("#cluster-view", VerticalScroll)
        view.scroll_home(animate=False)
        # The keys (y, u, the arrows to scroll) act on the plan, not the field.
        view.focus()

    @staticmethod
    def _verdict(plan: ClusterPlan) -> str:
        if plan.model is None:
            return "Nothing fits these hosts together (see below)."
        return f"{plan.model.name} {plan.model.quant}: {plan.model.verdict}."

    # --- copying and starting ------------------------------------------------------------------

    def action_copy(self) -> None:
        if not self.command:
            self._status("Nothing to copy yet: type the servers and press Enter.")
            return
        self.app.copy_to_clipboard(shlex.join(self.command))
        self._status(
            "Copied the `cluster up` command (OSC 52: your terminal, even over SSH, puts it on "
            "the clipboard; tmux needs `set -g set-clipboard on`)."
        )

    def refusal(self) -> str | None:
        """Why this plan cannot be started, in the plan's own words; None when it can."""
        plan = self.plan
        if self.planning:
            return "The servers are still being detected: the plan comes next."
        if plan is None:
            return "There is no plan yet: type the servers and press Enter."
        from llama_wizard.tui.cluster.plan import start_refusal

        refusal = start_refusal(plan)
        if refusal is None:
            return None
        from llama_wizard.tui.format import plain_text

        return plain_text(f"Not started: {refusal.message}\nFix: {refusal.fix}")

    def action_start(self) -> None:
        if self.starting:
            self._status("The cluster is starting; its progress is below.")
            return
        why = self.refusal()
        if why is not None:
            self._status(why)
            return
        assert self.plan is not None
        self.starting = True
        self.progress = []
        self.query_one("#cluster-progress", Static).update("")
        self._status("Starting the cluster: building on each host, then the servers…")
        self.start_cluster(self.plan)

    @work(thread=True, group="cluster-up")
    def start_cluster(self, plan: ClusterPlan) -> None:
        try:
            # Imported here: the runtime is not needed to plan, and loads SSH and HTTP code.
            from llama_wizard.tui.cluster.runtime import cluster_up
            from llama_wizard.tui.cluster.ssh import SshOptions
        except ImportError as error:
            self.post_message(UpDone(None, _Unavailable(error)))
            return
        event: Callable[[str, str], None] = lambda host, text: self.post_message(  # noqa: E731
            UpEvent(host, text)
        )
        try:
            state = cluster_up(plan, SshOptions(), event)
        except ActionableError as error:
            self.post_message(UpDone(None, error))
            return
        except Exception as error:  # the screen must say it, not vanish with the worker
            self.post_message(UpDone(None, _Unexpected(error)))
            return
        self.post_message(UpDone(getattr(state, "url", None), None))

    def on_up_event(self, message: UpEvent) -> None:
        self._append(f"[{message.host}] {message.text}")

    def _append(self, text: str) -> None:
        self.progress.append(text)
        # The last lines are what matter while it runs; all of it stays for scrolling.
        self.query_one("#cluster-progress", Static).update("\n" + "\n".join(self.progress))
        self.query_one("#cluster-view", VerticalScroll).scroll_end(animate=False)

    def on_up_done(self, message: UpDone) -> None:
        self.starting = False
        error = message.error
        if error is not None:
            lines = error.message.splitlines()
            if len(lines) > 2:
                # A build log's tail: all of it below the progress, the gist and the fix here,
                # where the status's few rows keep the fix in view.
                self._append(error_text(error))
                error = ActionableError(f"{lines[0]} (all of it below)", error.fix)
            self._status(error_text(error))
            return
        where = f" at {message.url}" if message.url else ""
        self._status(
            f"The cluster is up{where}. `llama-wizard cluster status` shows it; "
            "`llama-wizard cluster down` stops it."
        )

    # --- leaving -------------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.starting:
            # The worker goes on (a thread cannot be stopped halfway safely); say how to stop it.
            self.notify(
                "The cluster goes on starting; `llama-wizard cluster down` stops it.",
                severity="warning",
                timeout=12,
                markup=False,
            )
        self.app.pop_screen()

    def leave(self, go_on: Callable[[], None]) -> None:
        # ctrl+n: back to the Hardware step, which decides whether the wizard goes on.
        self.action_back()
        below = self.app.screen
        if isinstance(below, WizardStep):
            below.leave(go_on)


class _Unavailable(ActionableError):
    def __init__(self, error: ImportError) -> None:
        super().__init__(
            f"This llama-wizard cannot start a cluster ({error}).",
            "Copy the command (y) and run it where llama-wizard is up to date.",
        )


class _Unexpected(ActionableError):
    def __init__(self, error: Exception) -> None:
        super().__init__(
            f"Starting the cluster failed: {type(error).__name__}: {error}",
            "Run the `cluster up` command (y copies it) in a terminal to see the whole output; "
            "`llama-wizard cluster down` stops what was started.",
        )
