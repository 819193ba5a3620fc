"""On-device tuning with optuna: the knobs the closed form does not cover, scored by measured tokens/s.

Each trial builds a tree from the calibration stats with its (budget, max depth, max children,
objective) and, with typical acceptance, its thresholds; then decodes the tuning prompts with the
runtime and reports measured tokens/s. The study lives in an optuna storage (a local SQLite file by
default) so an interrupted study resumes, and several processes or machines can share one study
through any storage URL (PostgreSQL for a cluster).

``run_tune`` is the whole of ``treeopt tune``: calibrate on the tuning prompts unless given stats, run (or join) the
study, write the best trial's tree, bench it on held-out prompts. Each trial's tree is ``choice.choose_tree``'s for
its fixed budget and shape. This module does not load models or prompts (the command line hands them over).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from medusa_runtime.decoding import MedusaDecoder
from medusa_runtime.sampling import SamplingConfig
from medusa_runtime.spec import TreeSpec

from .builder import OBJECTIVES, BuildError
from .choice import choose_tree
from .design import TreeRequest
from .stats import CalibrationStats


@dataclass
class TuneSpace:
    max_budget: int = 128
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # what every trial decodes with


def tuned_sampling(sampling: SamplingConfig, params: dict) -> SamplingConfig:
    """The settings with the typical-acceptance thresholds a trial (or the best one's params) chose, if any."""
    if sampling.rule != "typical":
        return sampling
    return replace(sampling, posterior_threshold=params.get("posterior_threshold", sampling.posterior_threshold),
                   posterior_alpha=params.get("posterior_alpha", sampling.posterior_alpha))


def trial_tree(trial: optuna.Trial, stats: CalibrationStats, space: TuneSpace) -> TreeSpec:
    budget = trial.suggest_int("budget", 1, space.max_budget, log=True)
    max_depth = trial.suggest_int("max_depth", 1, stats.num_heads)
    max_children = trial.suggest_int("max_children", 1, stats.topk)
    objective = trial.suggest_categorical("objective", list(OBJECTIVES))
    try:
        return choose_tree(stats, TreeRequest(budget, objective, max_depth, max_children), meta={"builder": "treeopt tune"}).spec
    except BuildError as err:
        raise optuna.TrialPruned(str(err)) from None


def measure_tokens_per_s(loaded, heads, spec: TreeSpec, prompt_ids, max_new_tokens: int, sampling: SamplingConfig) -> tuple[float, float]:
    """(tokens/s, tokens/step) of the runtime on these prompts."""
    decoder = MedusaDecoder(loaded.model, heads, spec, loaded.eos_token_ids, sampling)
    decoder.generate(prompt_ids[0], 4)  # warm-up
    tokens = steps = 0
    t0 = time.perf_counter()
    for ids in prompt_ids:
        result = decoder.generate(ids, max_new_tokens)
        tokens += len(result.tokens)
        steps += result.steps
    return tokens / (time.perf_counter() - t0), tokens / steps


def open_study(storage: str, study_name: str, seed: int = 0, attempts: int = 8) -> optuna.Study:
    """Create or join a study. Workers starting together race to create the schema and the study:
    the loser retries and then joins."""
    import random

    from optuna.exceptions import DuplicatedStudyError
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
                                       sampler=optuna.samplers.TPESampler(seed=seed + attempt))
        except (OperationalError, IntegrityError, DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def run_study(loaded, heads, stats: CalibrationStats, prompt_ids, trials: int, storage: str, study_name: str,
              max_new_tokens: int = 64, space: TuneSpace | None = None, seed: int = 0) -> optuna.Study:
    space = space or TuneSpace()
    study = open_study(storage, study_name, seed)

    def objective(trial: optuna.Trial) -> float:
        spec = trial_tree(trial, stats, space)
        sampling = space.sampling
        if sampling.rule == "typical":
            sampling = tuned_sampling(sampling, {"posterior_threshold": trial.suggest_float("posterior_threshold", 0.01, 0.3, log=True),
                                                 "posterior_alpha": trial.suggest_float("posterior_alpha", 0.05, 0.6, log=True)})
        tokens_per_s, tokens_per_step = measure_tokens_per_s(loaded, heads, spec, prompt_ids, max_new_tokens, sampling)
        trial.set_user_attr("tokens_per_step", tokens_per_step)
        trial.set_user_attr("paths", [list(p) for p in spec.paths])
        trial.set_user_attr("expected_tokens_per_step", spec.meta["expected_tokens_per_step"])
        return tokens_per_s

    # --trials is the study's total, whichever process ran them: workers share it, a resumed study finishes it
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    done = len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    if trials > done:
        study.optimize(objective, n_trials=trials - done, show_progress_bar=True,
                       callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))])
    return study


def best_tree(study: optuna.Study) -> TreeSpec:
    from optuna.trial import TrialState

    if not study.get_trials(states=(TrialState.COMPLETE,)):
        raise ValueError(f"study {study.study_name!r} has no completed trial (all pruned: budgets beyond what the "
                         f"stats support); lower --max-budget or calibrate on more prompts")
    best = study.best_trial
    meta = {"builder": "treeopt tune", "study": study.study_name, "trial": best.number,
            "tuning_tokens_per_s": round(best.value, 3), "tuning_tokens_per_step": round(best.user_attrs["tokens_per_step"], 4),
            "expected_tokens_per_step": best.user_attrs["expected_tokens_per_step"], **best.params}
    return TreeSpec([tuple(p) for p in best.user_attrs["paths"]], meta)


def check_storage(storage: str) -> str:
    """Refuse an optuna storage URL that cannot be opened before any model loads: not a URL, an unknown database, a
    driver that is not installed, a SQLite file in a missing folder (ValueError naming --storage and the fix). Returns
    the URL with its password hidden, for messages and the tree's meta."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "e.g. sqlite:///tune.db or postgresql+psycopg2://user@host/db"
    try:
        url = make_url(storage)
        dialect = url.get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError: first
        raise ValueError(f"--storage {storage.split('@')[-1]!r}: unknown database {url.drivername!r}; {example}") from None
    except ArgumentError:
        raise ValueError(f"--storage {storage.split('@')[-1]!r}: not a database URL; {example}") from None
    shown = url.render_as_string(hide_password=True)
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise ValueError(f"--storage {shown}: its driver is not installed ({err}); install it or name an installed one in "
                         f"the URL, {example}") from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" and not Path(url.database).parent.is_dir():
        raise ValueError(f"--storage {shown}: folder {Path(url.database).parent} does not exist; create it or use another path")
    return shown


@dataclass
class TuneJob:
    """What ``treeopt tune`` was asked: where the study lives, how much of it, what each trial decodes."""

    out: Path  # the best trial's tree spec
    prompts: str  # prompt source (recorded in the stats' provenance and the held-out report)
    select: str  # the tuning prompts' slice
    trials: int = 20  # the study's total, whichever process ran them
    storage: str | None = None  # optuna storage URL (None: SQLite next to ``out``)
    study: str = "treeopt-tune"
    max_budget: int = 128
    max_new_tokens: int = 64  # per tuning prompt (the held-out bench runs 128)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stats: CalibrationStats | None = None  # None: calibrate on the tuning prompts
    holdout: str | None = None  # the held-out prompts' slice (None: no held-out bench)
    command: str | None = None  # recorded in the stats' provenance
    model: str | None = None  # recorded in the held-out report


@dataclass
class TuneResult:
    spec: TreeSpec  # the best trial's tree, as written to ``TuneJob.out``
    study: optuna.Study
    holdout: object | None = None  # the held-out ``BenchReport`` (None: no held-out prompts)


def run_tune(loaded, heads, heads_path: str | None, job: TuneJob, prompt_ids, holdout_ids=None) -> TuneResult:
    """Calibrate (unless ``job.stats``), run the study, write the best tree, bench it on ``holdout_ids``. ValueError
    naming the option to change for a storage that cannot be used or a study without a completed trial."""
    from sqlalchemy.exc import SQLAlchemyError

    from medusa_runtime.bench import run_bench
    from medusa_runtime.files import one_line
    from medusa_runtime.sampling import same_distribution

    from .calibration import calibrate, stats_provenance

    if job.trials < 1:
        raise ValueError(f"--trials {job.trials}: use an integer >= 1")
    sampling, stats = job.sampling, job.stats
    if stats is None:
        stats = calibrate(loaded, heads, prompt_ids, job.max_new_tokens, 10,
                          stats_provenance(heads, heads_path, job.prompts, job.select, len(prompt_ids), sampling, job.command),
                          sampling=sampling)
    if sampling.sampled and same_distribution(stats.sampling(), sampling.settings()):
        sampling = sampling.with_drafts(stats.provenance.get("drafts"))  # draft as the stats were ranked
    job.out.parent.mkdir(parents=True, exist_ok=True)
    storage = job.storage or f"sqlite:///{job.out.parent.resolve() / 'treeopt-tune.db'}"
    shown = storage if storage.startswith("sqlite") else storage.split("@")[-1]  # never show or store passwords
    try:
        study = run_study(loaded, heads, stats, prompt_ids, job.trials, storage, job.study, job.max_new_tokens,
                          TuneSpace(max_budget=job.max_budget, sampling=sampling))
    except SQLAlchemyError as err:  # unreachable server, wrong credentials, a file that is not a database
        raise ValueError(f"--storage {shown}: cannot be used ({err.__class__.__name__}: "
                         f"{one_line(getattr(err, 'orig', None) or err)}); check the server, the credentials or the file") from None
    spec = best_tree(study)
    spec.meta["storage"] = shown
    spec.save(job.out)
    report = None
    if holdout_ids:
        report = run_bench(loaded, heads, spec, holdout_ids, 128, sampling=tuned_sampling(sampling, spec.meta))
        report.model, report.heads, report.tree = job.model, heads_path, str(job.out)
        report.prompt_source, report.select = job.prompts, job.holdout
    return TuneResult(spec, study, report)
