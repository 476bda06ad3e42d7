"""optuna-dashboard on a study storage, with the Pareto front Optuna itself reports.

optuna-dashboard (0.21) draws its Pareto-front plot from feasible trials (it reads
``system_attrs["constraints"]``, which the search's sampler writes), but its "Best Trials" list
comes from the server, which ranks every complete trial, infeasible ones included: a shape over
the latency budget can be listed as best. :func:`dashboard_app` serves the same dashboard with
that list computed over feasible trials only, as ``study.best_trials`` (Optuna 5) and
``anyshape export`` compute it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nas.errors import AnyshapeError
from nas.search.storage import is_feasible, load_storage


def _feasible_front(original: Any) -> Any:
    from optuna.trial import TrialState

    def front(trials: Sequence[Any], directions: Sequence[Any]) -> list[Any]:
        feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)]
        return list(original(feasible, directions))

    front.anyshape_feasible = True  # type: ignore[attr-defined]
    return front


def dashboard_app(storage: str) -> Any:
    """The optuna-dashboard WSGI app on ``storage``, its best trials restricted to feasible ones."""
    import optuna_dashboard
    from optuna_dashboard import _app

    original = getattr(_app, "get_pareto_front_trials", None)
    if original is None:
        raise AnyshapeError(f"optuna-dashboard {optuna_dashboard.__version__} has no get_pareto_front_trials to "
                            "restrict to feasible trials; install optuna-dashboard 0.16 to 0.21")
    if not getattr(original, "anyshape_feasible", False):
        _app.get_pareto_front_trials = _feasible_front(original)
    return optuna_dashboard.wsgi(load_storage(storage))


def serve_dashboard(storage: str, host: str, port: int, *, ready: Any = None) -> None:
    """Serve :func:`dashboard_app` until interrupted; ``ready(url)`` is called once it listens."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    app = dashboard_app(storage)
    try:
        server = make_server(host, port, app, handler_class=Quiet)
    except OSError as e:
        raise AnyshapeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    with server:
        if ready is not None:
            ready(f"http://{host}:{server.server_port}")
        server.serve_forever()
