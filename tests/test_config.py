"""Job-file validation: unknown keys, wrong types, ranges, paths, overrides."""

import os

import pytest

from petuum_mpi import config as C
from petuum_mpi.errors import ConfigError

SCHEMA = C.merge_schemas(
    C.COMMON_SCHEMA,
    {
        "model": C.Section(
            {
                "alpha": C.Field(float, 1.0, min=0, min_exclusive=True),
                "max_iter": C.Field(int, 100, min=1),
                "fit_intercept": C.Field(bool, True),
                "solver": C.Field(str, "cd", choices=("cd", "prox")),
                "alphas": C.Field(list, None, item_type=float),
            }
        ),
        "engine": C.Section({"staleness": C.Field(int, 0, min=0)}, subsections={"straggler": C.Section({"factor": C.Field(float, 1.0, min=1)})}),
    },
)


def job(**sections):
    raw = {"app": "lasso", "data": {"train": "."}}
    raw.update(sections)
    return raw


def test_defaults_filled_and_types_coerced(tmp_path):
    out = C.validate(job(model={"alpha": 2}), SCHEMA, base_dir=str(tmp_path))
    assert out["model"] == {"alpha": 2.0, "max_iter": 100, "fit_intercept": True, "solver": "cd", "alphas": None}
    assert isinstance(out["model"]["alpha"], float)
    assert out["run"]["seed"] == 0 and out["run"]["progress"] == "auto"
    assert out["engine"]["straggler"] == {"factor": 1.0}
    assert out["data"]["train"] == str(tmp_path)


@pytest.mark.parametrize(
    "raw, needle",
    [
        (job(model={"alfa": 1.0}), "[model] alfa: unknown key"),
        (job(model={"alpha": -1.0}), "[model] alpha: must be > 0"),
        (job(model={"alpha": "big"}), "[model] alpha: expected a number, got a string"),
        (job(model={"max_iter": 1.5}), "[model] max_iter: expected an integer"),
        (job(model={"max_iter": True}), "[model] max_iter: expected an integer"),
        (job(model={"fit_intercept": 1}), "[model] fit_intercept: expected true or false"),
        (job(model={"solver": "newton"}), "[model] solver: 'newton' is not one of 'cd', 'prox'"),
        (job(model={"alphas": [1.0, "x"]}), "[model] alphas[1]: expected a number"),
        (job(model={"alpha": float("nan")}), "[model] alpha: expected a finite number"),
        (job(modle={}), "modle: unknown section or key"),
        (job(engine={"straggler": {"factor": 0.5}}), "[engine.straggler] factor: must be >= 1"),
        (job(engine={"straggler": {"slow": 2}}), "[engine.straggler] slow: unknown key"),
        (job(model=3), "[model]: expected a table"),
        ({"app": "lasso"}, "[data] train: missing required key"),
        (job(data={"train": "no/such/dataset"}), "[data] train: not found"),
    ],
)
def test_bad_values_name_the_key(raw, needle, tmp_path):
    with pytest.raises(ConfigError) as e:
        C.validate(raw, SCHEMA, base_dir=str(tmp_path))
    assert needle in str(e.value)


def test_overrides_parse_toml_values():
    raw = C.apply_overrides(job(), ["model.alpha=0.5", "engine.straggler.factor=2", "model.solver=prox", 'run.name="x y"'])
    assert raw["model"]["alpha"] == 0.5 and raw["engine"]["straggler"]["factor"] == 2
    assert raw["model"]["solver"] == "prox" and raw["run"]["name"] == "x y"
    with pytest.raises(ConfigError, match="expected section.key=value"):
        C.apply_overrides(job(), ["model.alpha"])


def test_toml_round_trip(tmp_path):
    out = C.validate(job(model={"alpha": 0.25, "alphas": [1.0, 0.5]}), SCHEMA, base_dir=str(tmp_path))
    text = C.to_toml(out)
    again = C.validate(C.tomllib.loads(text), SCHEMA, base_dir=str(tmp_path))
    assert again == out


def test_resolve_job_reports_file_and_unknown_app(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('app = "nope"\n[data]\ntrain = "."\n')
    with pytest.raises(ConfigError, match="unknown app 'nope'"):
        C.resolve_job(str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("app = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        C.resolve_job(str(broken))
    with pytest.raises(ConfigError, match="job file not found"):
        C.resolve_job(str(tmp_path / "missing.toml"))
    noapp = tmp_path / "noapp.toml"
    noapp.write_text("[data]\ntrain='.'\n")
    with pytest.raises(ConfigError, match="missing required key 'app'"):
        C.resolve_job(str(noapp))


@pytest.mark.mpi
def test_load_job_same_on_every_rank(comm, shared_tmp):
    path = os.path.join(shared_tmp, "bad.toml")
    if comm.rank == 0:
        with open(path, "w") as fh:
            fh.write('app = "nope"\n')
    comm.Barrier()
    msgs = []
    try:
        C.load_job(path, comm=comm)
    except ConfigError as e:
        msgs.append(str(e))
    allmsgs = comm.allgather(msgs)
    assert all(m == allmsgs[0] and len(m) == 1 for m in allmsgs)
    assert "unknown app" in allmsgs[0][0]


def test_non_utf8_job_file_names_the_byte(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_bytes(b'app = "lasso"\n# caf\xe9 latin-1\n')
    with pytest.raises(ConfigError) as e:
        C.resolve_job(str(bad))
    assert str(e.value).startswith(f"{bad}: not UTF-8 text (byte 0xe9 at offset 19, line 2)")


def test_relative_paths_follow_the_job_file_also_from_set(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    (tmp_path / "data").mkdir()
    jobs.mkdir()
    job = jobs / "j.toml"
    job.write_text('app = "logreg"\n[data]\ntrain = "../data"\n[engine]\nsnapshot_dir = "ckpt"\n'
                   '[run]\noutput_dir = "../out"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = C.resolve_job(str(job))
    assert out["run"]["output_dir"] == str(tmp_path / "out")
    assert out["engine"]["snapshot_dir"] == str(jobs / "ckpt")
    out = C.resolve_job(str(job), ["run.output_dir=r2", "engine.snapshot_dir=/abs/ck"])
    assert out["run"]["output_dir"] == str(jobs / "r2") and out["engine"]["snapshot_dir"] == "/abs/ck"
    job.write_text('app = "logreg"\n[data]\ntrain = "../data"\n')
    assert C.resolve_job(str(job))["run"]["output_dir"] == str(elsewhere / "runs")  # unset: ./runs


@pytest.mark.parametrize(
    "override, needle",
    [
        ("engine.keep_snapshots=-1", "[engine] keep_snapshots: must be >= 0"),
        ('engine.keep_snapshots="3"', "[engine] keep_snapshots: expected an integer"),
        ("engine.resume=true", "[engine] resume: needs snapshot_dir"),
        ("engine.snapshot_every=5", "[engine] snapshot_every: needs snapshot_dir"),
        ("run.exists=replace", "[run] exists: 'replace' is not one of 'error', 'new', 'overwrite'"),
        ('run.name="a/b"', "[run] name: 'a/b' is not a folder name"),
    ],
)
def test_run_and_snapshot_keys_are_validated(tmp_path, override, needle):
    job = tmp_path / "j.toml"
    job.write_text('app = "logreg"\n[data]\ntrain = "."\n')
    with pytest.raises(ConfigError) as e:
        C.resolve_job(str(job), [override])
    assert needle in str(e.value)
    ok = C.resolve_job(str(job), ["engine.keep_snapshots=0", "engine.snapshot_dir='c'", "engine.resume=true"])
    assert ok["engine"]["keep_snapshots"] == 0 and ok["run"]["exists"] == "error"


def test_set_value_not_utf8():
    with pytest.raises(ConfigError, match="--set run.name: the value is not UTF-8"):
        C.parse_override("run.name=caf\udce9")
