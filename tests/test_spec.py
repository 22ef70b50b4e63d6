"""Sweep specs: loading, every class of user error (file, field path, what is allowed), overrides, expansion."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.spec import (
    MAX_NAME,
    METRICS,
    SweepSpec,
    Trial,
    expand,
    is_grid,
    list_specs,
    load_spec,
    parse_distribution,
    parse_spec,
)
from trainables.config import ConfigError, parse_set

SHIPPED = ("baselines", "factorial", "guided_pairing", "hpo", "lambda_distributions", "official_vs_paper",
           "saliency_methods", "selection_schemes", "smoke")

OK = """\
name: tiny
base:
  dataset: synthetic_salient
  model: small_cnn
  mix.preset: saliencymix
factors:
  mix.selection: [salient_to_corresponding, salient_to_salient, salient_to_nonsalient]
seeds: [0, 1]
"""

# (id, spec text, regex the single UserError message must match right after `FILE: `): where the problem is - the
# spec path and line, or the YAML line and column - comes first, then what is wrong, the value and what is allowed
MALFORMED = [
    ("yaml_syntax", "name: x\nbase: {a: 1\nfactors: b\n", r"line 3, column \d+: invalid YAML"),
    ("yaml_indent", "name: x\nbase:\n  a: 1\n b: 2\n", r"line 4, column 2: invalid YAML"),
    ("yaml_tab", "name: x\nbase:\n\tdataset: cifar10\n", r"line 3, column 1: invalid YAML"),
    ("yaml_duplicate_key", "name: x\nseeds: 2\nseeds: 3\n", r"line 3, column 1: invalid YAML: duplicate key 'seeds' "
                                                            r"\(first at line 2\)"),
    ("yaml_python_tag", "name: !!python/object/apply:os.system [ls]\n",
     r"line 1, column 7: invalid YAML: could not determine a constructor for the tag"),
    ("empty", "", r"the spec is empty; .*`name:`"),
    ("only_comments", "# a comment\n", r"the spec is empty"),
    ("top_level_list", "- name: x\n", r"the top level must be a mapping of spec fields \(name, description"),
    ("top_level_scalar", "just text\n", r"the top level must be a mapping .*got str"),
    ("unknown_top_level", "name: x\nfactor: {}\n", r"factor \(line 2\): unknown top-level key \(did you mean "
                                                   r"'factors'\?\); allowed: name, description, experiment, base"),
    ("config_key_at_top", "name: x\nepochs: 3\n", r"epochs \(line 2\): 'epochs' is a training config key, not a spec "
                                                  r"field: put it under `base:`"),
    ("missing_name", "base: {}\n", r"name: required field is missing: .*\[a-z0-9\]\[a-z0-9_-\]\*"),
    ("bad_name", "name: My Sweep!\n", r"name \(line 1\): must be 1\.\.64 characters .*\[a-z0-9\]\[a-z0-9_-\]\*.*e\.g\. "
                                      r"'my_sweep' \(got 'My Sweep!'\)"),
    ("long_name", f"name: {'a' * 65}\n", r"name \(line 1\): must be 1\.\.64 characters"),
    ("seeds_type", "name: x\nseeds: abc\n", r"seeds \(line 2\): expected an integer N >= 1 .* \(got 'abc'\)"),
    ("seeds_zero", "name: x\nseeds: 0\n", r"seeds \(line 2\): 0 seeds is no sweep; expected an integer N >= 1"),
    ("seeds_empty", "name: x\nseeds: []\n", r"seeds \(line 2\): empty list; expected"),
    ("seeds_duplicate", "name: x\nseeds: [0, 1, 1]\n",
     r"seeds\[2\] \(line 2\): duplicate seed 1 \(already seeds\[1\]\)"),
    ("seeds_negative", "name: x\nseeds: [0, -1]\n", r"seeds\[1\] \(line 2\): a seed is an integer in \[0, 2\*\*63\) "
                                                    r"\(got -1\)"),
    ("seeds_bool", "name: x\nseeds: true\n", r"seeds \(line 2\): expected an integer N >= 1"),
    ("max_failures_float", "name: x\nmax_failures: 1.5\n",
     r"max_failures \(line 2\): expected an integer \(got 1\.5\)"),
    ("max_failures_negative", "name: x\nmax_failures: -1\n", r"max_failures \(line 2\): must be >= 0 \(got -1\)"),
    ("cpu_zero", "name: x\nresources: {cpu: 0}\n", r"resources\.cpu \(line 2\): must be > 0 \(got 0\)"),
    ("gpu_negative", "name: x\nresources:\n  gpu: -0.5\n", r"resources\.gpu \(line 3\): must be >= 0 \(got -0\.5\)"),
    ("gpu_fraction_above_one", "name: x\nresources: {gpu: 1.5}\n", r"resources\.gpu \(line 2\): .*a value <= 1 or a "
                                                                   r"whole number"),
    ("resources_unknown_key", "name: x\nresources: {cpus: 2}\n", r"resources\.cpus \(line 2\): unknown key \(did you "
                                                                 r"mean 'cpu'\?\); allowed: cpu, gpu"),
    ("resources_not_mapping", "name: x\nresources: 4\n", r"resources \(line 2\): expected a mapping with keys cpu, gpu "
                                                         r"\(got 4\)"),
    ("metric_unknown", "name: x\nmetric: final/top1\n",
     r"metric \(line 2\): unknown metric 'final/top1' \(did you mean "
     r"'final/top1_err'\?\); allowed: train/loss"),
    ("mode_bad", "name: x\nmode: minimize\n", r"mode \(line 2\): unknown value 'minimize'; allowed: min, max$"),
    ("scheduler_bad", "name: x\nscheduler: hyperband\n",
     r"scheduler \(line 2\): unknown value 'hyperband'; allowed: fifo, asha$"),
    ("asha_without_asha", "name: x\nasha: {grace_period: 2}\n", r"asha \(line 2\): only applies to `scheduler: asha`"),
    ("asha_bad_factor", "name: x\nscheduler: asha\nasha: {reduction_factor: 1}\n",
     r"asha\.reduction_factor \(line 3\): must be > 1 \(got 1\)"),
    ("experiment_empty", "name: x\nexperiment: ' '\n", r"experiment \(line 2\): must be a non-empty MLflow experiment"),
    ("base_not_mapping", "name: x\nbase: [dataset, cifar10]\n", r"base \(line 2\): expected a mapping of training "
                                                                r"config keys"),
    ("base_unknown_key", "name: x\nbase:\n  optim:\n    lrr: 0.1\n",
     r"base\.optim\.lrr \(line 4\): unknown key \(did you mean 'optim\.lr'\?\); allowed: optim\.name"),
    ("base_key_without_section", "name: x\nbase: {lr: 0.1}\n", r"base\.lr \(line 2\): unknown key \(did you mean "
                                                               r"'optim\.lr'\?\)"),
    ("base_out_of_range", "name: x\nbase:\n  optim.lr: -1\n", r"base\.optim\.lr \(line 3\): must be > 0 \(got -1\)"),
    ("base_wrong_type", "name: x\nbase: {epochs: many}\n",
     r"base\.epochs \(line 2\): expected an integer \(got 'many'\)"),
    ("base_unknown_value", "name: x\nbase: {mix.preset: cutmx}\n",
     r"base\.mix\.preset \(line 2\): unknown value 'cutmx' \(did you mean 'cutmix'\?\); allowed: none"),
    ("base_unknown_dataset", "name: x\nbase: {dataset: cifar1O}\n",
     r"base\.dataset \(line 2\): unknown dataset 'cifar1O' \(did you mean 'cifar10'\?\); allowed: cifar10, "),
    ("base_unknown_data_option", "name: x\nbase: {data.clutterr: 1}\n", r"base\.data\.clutterr \(line 2\): unknown "
                                                                        r"option for dataset 'synthetic_salient' \(did "
                                                                        r"you mean 'data\.clutter'\?\); allowed:"),
    ("base_seed", "name: x\nbase: {seed: 3}\n", r"base\.seed \(line 2\): seeds are their own axis: write `seeds:"),
    ("base_bad_combination", "name: x\nbase: {mix.preset: none, mix.prob: 0.5}\n",
     r"base \(line 2\): mix\.preset=none does not mix, so it takes no other mix\.\* keys"),
    ("factors_list", "name: x\nfactors: [a, b]\n", r"factors \(line 2\): expected a mapping of config key -> list of "
                                                   r"levels"),
    ("factor_not_list", "name: x\nfactors:\n  mix.preset: cutmix\n",
     r"factors\.mix\.preset \(line 3\): expected a list "
     r"of levels, e.g\. \[a, b\] \(got 'cutmix'\)"),
    ("factor_empty", "name: x\nfactors:\n  mix.selection: []\n", r"factors\.mix\.selection \(line 3\): empty list"),
    ("factor_duplicate", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n  mix.prob: [0.5, 1.0, 0.5]\n",
     r"factors\.mix\.prob\[2\] \(line 4\): duplicate level 0\.5 \(already mix\.prob\[0\]\)"),
    ("factor_seed", "name: x\nfactors: {seed: [0, 1]}\n", r"factors\.seed \(line 2\): seeds are their own axis, not a "
                                                          r"factor: write `seeds: \[0, 1, 2\]`"),
    ("factor_in_base", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n  mix.preset: [cutmix, mixup]\n",
     r"factors\.mix\.preset \(line 4\): also fixed in base \(base\.mix\.preset = cutmix\)"),
    ("factor_unknown_key", "name: x\nbase: {mix.preset: saliencymix}\nfactors:\n  mix.selction: [random]\n",
     r"factors\.mix\.selction \(line 4\): unknown key \(did you mean 'mix\.selection'\?\); allowed: mix\.preset"),
    ("factor_unknown_value", "name: x\nbase: {mix.preset: saliencymix}\nfactors:\n  mix.selection:\n"
                             "    - salient_to_salient\n    - random\n    - salient_to_slient\n",
     r"factors\.mix\.selection\[2\] \(line 7\): unknown value 'salient_to_slient' \(did you mean 'salient_to_salient'"
     r"\?\); allowed: salient_to_corresponding"),
    ("factor_bad_lam", "name: x\nbase: {mix.preset: saliencymix}\nfactors:\n  mix.lam: ['uniform(0,1)', 'beta(0,1)']\n",
     r"factors\.mix\.lam\[1\] \(line 4\): bad lam distribution 'beta\(0,1\)': parameters out of range; expected "
     r"uniform\(a,b\)"),
    ("factor_out_of_range", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n  mix.prob: [0.5, 1.5]\n",
     r"factors\.mix\.prob\[1\] \(line 4\): 1\.5 is out of range \[0\.0, 1\.0\]"),
    ("factor_nested_unknown_value", "name: x\nfactors:\n  mix:\n    preset: [cutmix, saliencymx]\n",
     r"factors\.mix\.preset\[1\] \(line 4\): unknown value 'saliencymx' \(did you mean 'saliencymix'\?\)"),
    ("factor_bad_combination", "name: x\nfactors:\n  mix.preset: [none, cutmix]\n  mix.prob: [0.5, 1.0]\n",
     r"factors \(line 2\): the combination mix\.preset=none × mix\.prob=0\.5 is invalid: "
     r"mix\.preset=none does not mix"),
    ("factor_bad_combination_preset", "name: x\nfactors:\n  mix.preset: [cutmix, mixup]\n  mix.selection: [random]\n",
     r"factors \(line 2\): the combination mix\.preset=mixup × mix\.selection=random is invalid: .*does not apply to "
     r"mix\.mask=blend"),
    ("factor_level_invalid_with_base", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n"
                                       "  mix.selection: [random, salient_to_salient]\n",
     r"factors\.mix\.selection\[1\] \(line 4\): mix\.selection=salient_to_salient fails with the base config: .*needs "
     r"a saliency detector but mix\.saliency is 'none'; allowed: fine_grained"),
    ("factor_level_invalid_with_every_other_level", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n"
                                                    "  mix.selection: [random, salient_to_salient]\n"
                                                    "  optim.lr: [0.1, 0.2]\n",
     r"factors\.mix\.selection\[1\] \(line 4\): mix\.selection=salient_to_salient fails with every level of the "
     r"other factors"),
    ("factor_level_conflicts_with_base", "name: x\nbase: {data.clutter: 1}\nfactors:\n"
                                         "  dataset: [synthetic_salient, cifar10]\n",
     r"factors\.dataset\[1\] \(line 4\): dataset=cifar10 does not go with base\.data\.clutter: data\.clutter: "
     r"unknown option for dataset 'cifar10'; allowed: "),
    ("duplicate_trial", "name: x\nbase: {mix.preset: saliencymix}\nfactors:\n"
                        "  mix.lam: ['uniform(0,1)', 'uniform(0.0, 1.0)']\n",
     r"factors \(line 3\): duplicate trial: mix\.lam=uniform\(0,1\) and mix\.lam=uniform\(0\.0, 1\.0\) resolve to the "
     r"same training config"),
    ("too_many_trials", "name: x\nbase: {mix.preset: cutmix}\nfactors:\n  optim.lr: [0.1, 0.2]\nseeds: 5001\n",
     r"factors \(line 3\): the grid has 10002 trials \(2 optim\.lr x 5001 seeds\); the limit is 10000"),
    ("search_unknown_algorithm", "name: x\nsearch: {algorithm: random}\n",
     r"search\.algorithm \(line 2\): unknown value 'random'; allowed: grid, optuna$"),
    ("search_unknown_key", "name: x\nsearch: {algorithm: grid, num_trails: 3}\n",
     r"search\.num_trails \(line 2\): unknown key \(did you mean 'num_trials'\?\); allowed: algorithm"),
    ("grid_with_space", "name: x\nsearch: {algorithm: grid, space: {optim.lr: 'uniform(0.1, 0.2)'}}\n",
     r"search\.space \(line 2\): only applies to search\.algorithm=optuna"),
    ("optuna_no_num_trials", "name: x\nsearch: {algorithm: optuna, space: {optim.lr: 'uniform(0.1, 0.2)'}}\n",
     r"search\.num_trials \(line 2\): search\.algorithm=optuna needs num_trials"),
    ("optuna_num_trials_zero",
     "name: x\nsearch: {algorithm: optuna, num_trials: 0, space: {optim.lr: 'uniform(0.1,1)'}}",
     r"search\.num_trials \(line 2\): must be >= 1 \(got 0\)"),
    ("optuna_no_space", "name: x\nsearch: {algorithm: optuna, num_trials: 4}\n",
     r"search\.space \(line 2\): search\.algorithm=optuna needs a space"),
    ("optuna_bad_distribution", "name: x\nsearch:\n  algorithm: optuna\n  num_trials: 4\n  space:\n"
                                "    optim.lr: loguniform(0.3)\n",
     r"search\.space\.optim\.lr \(line 6\): loguniform takes two numbers loguniform\(a,b\), got 1 in "
     r"'loguniform\(0\.3\)'; expected loguniform\(a,b\) with 0<a<b"),
    ("optuna_unknown_distribution",
     "name: x\nsearch: {algorithm: optuna, num_trials: 4, space: {mix.lam: 'beta(0,1)'}}",
     r"search\.space\.mix\.lam \(line 2\): unknown distribution 'beta' in 'beta\(0,1\)'; expected loguniform"),
    ("optuna_loguniform_nonpositive", "name: x\nsearch: {algorithm: optuna, num_trials: 4, "
                                      "space: {optim.lr: 'loguniform(0, 0.1)'}}",
     r"search\.space\.optim\.lr \(line 2\): 'loguniform\(0, 0\.1\)': loguniform needs 0 < a < b"),
    ("optuna_int_not_int", "name: x\nsearch: {algorithm: optuna, num_trials: 4, space: {epochs: 'int(1.5, 4)'}}",
     r"search\.space\.epochs \(line 2\): int bounds must be integers"),
    ("optuna_unknown_key", "name: x\nsearch: {algorithm: optuna, num_trials: 4, space: {optim.lrr: 'uniform(0.1,1)'}}",
     r"search\.space\.optim\.lrr \(line 2\): unknown key \(did you mean 'optim\.lr'\?\)"),
    ("optuna_value_out_of_range", "name: x\nbase: {mix.preset: cutmix}\n"
                                  "search: {algorithm: optuna, num_trials: 4, space: {mix.prob: 'uniform(0, 2)'}}",
     r"search\.space\.mix\.prob \(line 3\): uniform\(0,2\) includes 2\.0, which is invalid: mix\.prob: 2\.0 is out of "
     r"range"),
    ("optuna_several_seeds", "name: x\nseeds: 3\nsearch: {algorithm: optuna, num_trials: 4, "
                             "space: {optim.lr: 'loguniform(0.01, 0.3)'}}\n",
     r"seeds \(line 2\): search\.algorithm=optuna tunes one seed, so seeds must hold exactly one .*re-run the best "
     r"config over several seeds with a grid spec"),
    ("optuna_with_factors", "name: x\nbase: {mix.preset: cutmix}\nfactors: {mix.prob: [0.5, 1.0]}\n"
                            "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: 'loguniform(0.01, 0.3)'}}\n",
     r"factors \(line 3\): factors cannot be combined with search\.algorithm=optuna"),
    ("optuna_space_in_base", "name: x\nbase: {optim.lr: 0.1}\n"
                             "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: 'loguniform(0.01, 0.3)'}}\n",
     r"search\.space\.optim\.lr \(line 3\): also fixed in base"),
]


@pytest.mark.parametrize(("text", "pattern"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_spec_raises_one_user_error_naming_file_and_field(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    rest = message[len(f"{path}: "):]
    assert re.match(pattern, rest), f"{pattern!r} does not start {rest!r}"
    assert "\n" not in message and "validation error" not in message and "pydantic" not in message


@pytest.mark.parametrize(("text", "pattern"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_the_line_an_error_names_shows_the_key_at_fault(text, pattern):
    """What a user does with `FILE: PATH (line N)`: open line N and find the key at fault there - or, for a
    key that is missing, the section it belongs in; for one item of a list, the item."""
    with pytest.raises(UserError) as info:
        parse_spec(text, source="bad.yaml")
    error = info.value
    if error.line is None:  # a YAML syntax error (line and column in the text), or a missing field
        return
    assert str(error).startswith(f"bad.yaml: {error.where} (line {error.line}): "), str(error)
    line = text.splitlines()[error.line - 1]
    names = [p for p in re.split(r"[.\[\]]", error.where) if p and not p.isdigit()]
    item = error.where.endswith("]") and line.lstrip().startswith("- ")
    assert item or any(f"{name}:" in line or f"{name}." in line for name in names), (error.where, error.line, text)


def test_non_utf8_file_names_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.yaml: line 2: not valid UTF-8 \(byte 0xe9 at offset 24\)"):
        load_spec(path)


def test_missing_file_and_unknown_name_list_shipped_specs(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: no such spec file; .*shipped spec: baselines, factorial"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"'selection_schemas': not a spec file and not a shipped spec \(did you mean "
                                        r"'selection_schemes'\?\); .*smoke"):
        load_spec("selection_schemas")
    with pytest.raises(UserError, match=r"is a directory"):
        load_spec(tmp_path)


def test_load_by_path_keeps_source_and_text(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(OK, encoding="utf-8")
    spec = load_spec(str(path))
    assert spec.source == str(path) and spec.text == OK
    assert spec.name == "tiny" and spec.experiment == "mixsweep" and spec.seeds == (0, 1)
    assert spec.base == {"dataset": "synthetic_salient", "model": "small_cnn", "mix.preset": "saliencymix"}
    assert spec.factor_levels() == {"mix.selection": ["salient_to_corresponding", "salient_to_salient",
                                                      "salient_to_nonsalient"]}
    assert spec.search.algorithm == "grid" and spec.scheduler == "fifo" and spec.metric == "final/top1_err"
    assert spec.resources.cpu == 1 and spec.resources.gpu == 0 and spec.mode == "min" and spec.max_failures == 2


def test_load_by_name_and_list_specs():
    names = [name for name, _ in list_specs()]
    assert names == sorted(SHIPPED)
    assert all(desc for _, desc in list_specs())
    spec = load_spec("selection_schemes")
    assert spec.source == "search_spaces:selection_schemes" and "selection_schemes" in spec.text


def test_spec_is_frozen_and_pickles():
    spec = parse_spec(OK)
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_nested_and_dotted_base_are_the_same():
    nested = parse_spec("name: x\nbase:\n  optim:\n    lr: 0.1\n  mix: {preset: cutmix}\n")
    assert nested.base == {"optim.lr": 0.1, "mix.preset": "cutmix"}
    with pytest.raises(UserError, match=r"<string>: base\.optim\.lr \(line 4\): given twice"):
        parse_spec("name: x\nbase:\n  optim: {lr: 0.1}\n  optim.lr: 0.2\n")


def test_seeds_int_means_range_and_default_is_one_seed():
    assert parse_spec("name: x\nseeds: 3\n").seeds == (0, 1, 2)
    assert parse_spec("name: x\n").seeds == (0,)
    assert parse_spec("name: x\nseeds: [7, 3]\n").seeds == (7, 3)


# -- overrides -------------------------------------------------------------------------------------------------------


def test_overrides_set_base_keys_and_spec_fields():
    spec = load_spec("smoke", parse_set(["epochs=1", "optim.lr=0.2", "seeds=3", "resources.gpu=0.5",
                                         "factors.mix.preset=[none, cutmix]"]))
    assert spec.base["epochs"] == 1 and spec.base["optim.lr"] == 0.2
    assert spec.seeds == (0, 1, 2) and spec.resources.gpu == 0.5
    assert spec.factor_levels() == {"mix.preset": ["none", "cutmix"]}
    assert spec.overrides == {"epochs": 1, "optim.lr": 0.2, "seeds": 3, "resources.gpu": 0.5,
                              "factors.mix.preset": ["none", "cutmix"]}
    assert "epochs: 8" in spec.text  # the raw file, as shipped
    assert "epochs: 1" in spec.to_yaml()  # the effective spec


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [({"mix.preset": "cutmix"}, r"--set mix\.preset: mix\.preset is a factor of this spec \(levels: none, mixup, "
                                r"cutmix, saliencymix\); .*--set 'factors\.mix\.preset=\[\.\.\.\]'"),
     ({"optim.lrr": 0.1}, r"base\.optim\.lrr \(from --set optim\.lrr\): unknown key \(did you mean 'optim\.lr'\?\)"),
     ({"optim.lr": -1}, r"base\.optim\.lr \(from --set optim\.lr\): must be > 0 \(got -1\)"),
     ({"seed": 3}, r"--set seed: seeds are their own axis; use --set seeds=N"),
     ({"seeds": 0}, r"seeds \(from --set seeds\): 0 seeds is no sweep"),
     ({"experiment": 123}, r"experiment \(from --set experiment\): expected a string \(got 123\)"),
     ({"factors.mix.preset": ["none", "cutmx"]},
      r"factors\.mix\.preset\[1\] \(from --set factors\.mix\.preset\): unknown value 'cutmx' \(did you mean "
      r"'cutmix'\?\)")],
)
def test_bad_overrides(overrides, pattern):
    with pytest.raises(UserError, match=rf"^search_spaces:smoke: {pattern}"):
        load_spec("smoke", overrides)


def test_set_reads_values_as_yaml_once():
    """`--set` values are YAML, read once: a quoted scalar stays a string (`experiment="123"`)."""
    assert parse_set(["optim.lr=0.1", "mix.lam=beta(1,1)", "seeds=[0, 2]", "recipe=fast", 'experiment="123"',
                      "name='007'", "amp=true", "data.root=", " epochs = 3"]) == {
        "optim.lr": 0.1, "mix.lam": "beta(1,1)", "seeds": [0, 2], "recipe": "fast", "experiment": "123",
        "name": "007", "amp": True, "data.root": "", "epochs": 3}
    for bad in ("optim.lr", "=1"):
        with pytest.raises(ConfigError, match=r"--set '.*': expected KEY=VALUE") as info:
            parse_set([bad])
        assert info.value.keys == ()


def test_quoted_set_values_stay_strings_in_the_spec():
    spec = load_spec("smoke", parse_set(['experiment="123"', 'name="123"', "optim.lr=0.2"]))
    assert spec.experiment == "123" and spec.name == "123" and spec.base["optim.lr"] == 0.2
    assert spec.overrides == {"experiment": "123", "name": "123", "optim.lr": 0.2}
    assert [t.name for t in expand(spec)][:1] == ["none-s0"]


# -- distributions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("loguniform(0.01, 0.3)", "loguniform(0.01,0.3)"), ("uniform(-1,1)", "uniform(-1,1)"), ("int(2, 8)", "int(2,8)"),
     ("choice(cutmix, saliencymix)", "choice(cutmix, saliencymix)"),
     ("choice(beta(1,1), uniform(0,1))", "choice(beta(1,1), uniform(0,1))"), (["a", 0.5], "choice(a, 0.5)")],
)
def test_parse_distribution(text, canonical):
    dist = parse_distribution(text)
    assert str(dist) == canonical
    assert parse_distribution(str(dist)) == dist or dist.kind == "choice"


def test_choice_values_are_typed():
    assert parse_distribution("choice(0.1, 0.2)").choices == (0.1, 0.2)
    assert parse_distribution("int(1, 3)").probe_values() == [1, 3]


@pytest.mark.parametrize("bad", ["loguniform(0.3)", "uniform(1, 0)", "int(1, 2.5)", "beta(1,1)", "choice()",
                                 "choice(a, a)", "loguniform(-1, 1)", "0.1", "uniform(a, b)"])
def test_bad_distributions(bad):
    with pytest.raises(ValueError, match=r"expected|distinct|at least one"):
        parse_distribution(bad)


def test_distributions_map_to_ray_tune_domains():
    pytest.importorskip("ray.tune")
    from ray.tune.search.sample import Categorical, Float, Integer

    assert isinstance(parse_distribution("loguniform(0.01, 0.3)").to_tune(), Float)
    integer = parse_distribution("int(2, 4)").to_tune()
    assert isinstance(integer, Integer) and (integer.lower, integer.upper) == (2, 5)  # int(a,b) includes b
    assert isinstance(parse_distribution("choice(a, b)").to_tune(), Categorical)


def test_base_config_user_level_and_resolved():
    spec = load_spec("baselines")
    assert spec.base_config() == spec.base and spec.base_config() is not spec.base
    resolved = spec.base_config(resolved=True)
    assert resolved["epochs"] == 200 and resolved["mix.preset"] == "none" and resolved["seed"] == 0  # recipe, arm 1


def test_asha_on_a_grid_is_valid_but_warned():
    spec = parse_spec("name: x\nbase: {mix.preset: cutmix}\nfactors: {mix.prob: [0.5, 1.0]}\nscheduler: asha\n")
    assert spec.asha is None and any("biases" in w for w in spec.warnings())
    assert parse_spec(OK).warnings() == []


# -- expansion --------------------------------------------------------------------------------------------------------


def test_expansion_order_counts_and_configs():
    spec = parse_spec("name: x\nbase: {mix.preset: saliencymix, epochs: 2}\nfactors:\n"
                      "  mix.selection: [salient_to_corresponding, salient_to_salient]\n"
                      "  mix.pairing: [random, greedy, flip]\nseeds: [3, 1]\n")
    trials = expand(spec)
    assert len(trials) == 2 * 3 * 2 == spec.num_grid_trials()
    assert [(t.levels["mix.selection"], t.levels["mix.pairing"], t.seed) for t in trials[:4]] == [
        ("salient_to_corresponding", "random", 3), ("salient_to_corresponding", "random", 1),
        ("salient_to_corresponding", "greedy", 3), ("salient_to_corresponding", "greedy", 1)]
    first = trials[0]
    assert isinstance(first, Trial)
    assert first.config == {"mix.preset": "saliencymix", "epochs": 2, "mix.selection": "salient_to_corresponding",
                            "mix.pairing": "random", "seed": 3}  # user level: no recipe/defaults expanded
    assert first.name == "salient_to_corresponding-random-s3"


def test_hashes_group_seeds_and_separate_arms():
    trials = expand(parse_spec(OK))
    by_arm: dict[str, set[str]] = {}
    for t in trials:
        by_arm.setdefault(t.levels["mix.selection"], set()).add(t.config_hash)
    assert all(len(h) == 1 for h in by_arm.values())  # config_hash equal across the seeds of an arm
    assert len({next(iter(h)) for h in by_arm.values()}) == len(by_arm)  # and different across arms
    assert len({t.run_hash for t in trials}) == len(trials)
    assert all(re.fullmatch(r"[0-9a-f]{12}", t.config_hash + t.run_hash[:0]) for t in trials)


def test_hashes_are_stable_across_loads_and_ignore_execution_details():
    a = expand(parse_spec(OK))
    b = expand(parse_spec(OK.replace("model: small_cnn", "model: small_cnn\n  workers: 0\n  device: cpu")))
    assert [t.run_hash for t in a] == [t.run_hash for t in b]


def test_expand_refuses_two_arms_with_one_training_config():
    # a spec built by hand skips the load-time checks; expand() still refuses two spellings of one config
    spec = SweepSpec(name="x", base={"mix.preset": "saliencymix"},
                     factors={"mix.lam": ("uniform(0,1)", "uniform(0, 1)")})
    with pytest.raises(UserError, match=r"<string>: factors: duplicate trial: mix\.lam=uniform\(0,1\) and "
                                        r"mix\.lam=uniform\(0, 1\) resolve to the same training config"):
        expand(spec)


def test_names_unique_short_and_sanitised():
    spec = parse_spec("name: x\nbase: {mix.preset: saliencymix}\nfactors:\n"
                      "  mix.lam: ['uniform(0,1)', 'beta(0.5,0.5)', 'fixed(0.5)']\nseeds: 2\n")
    names = [t.name for t in expand(spec)]
    assert names[:2] == ["uniform_0_1-s0", "uniform_0_1-s1"] and "beta_0.5_0.5-s0" in names
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,60}", n) for n in names)


def test_names_that_collide_after_truncation_get_a_hash_piece():
    long_a, long_b = list(range(1, 26)), [*range(1, 25), 30]
    spec = parse_spec(f"name: x\nbase: {{mix.preset: cutmix, sched.name: multistep}}\nfactors:\n"
                      f"  sched.milestones: [{long_a}, {long_b}]\nseeds: [0, 12]\n")
    trials = expand(spec)
    names = [t.name for t in trials]
    assert len(set(names)) == 4 and all(len(n) <= MAX_NAME for n in names)
    assert names[0].startswith("1_2_3_4_5") and names[0].endswith(f"-{trials[0].config_hash[:6]}-s0")
    assert names[2].endswith(f"-{trials[2].config_hash[:6]}-s0")


def test_spec_without_factors_is_one_arm_named_after_the_sweep():
    trials = expand(parse_spec("name: plain\nbase: {mix.preset: cutmix}\nseeds: 3\n"))
    assert [t.name for t in trials] == ["plain-s0", "plain-s1", "plain-s2"] and all(t.levels == {} for t in trials)
    assert len({t.config_hash for t in trials}) == 1


def test_every_trial_is_resolved_once_and_kept(monkeypatch):
    """load_spec resolves each arm once (its seeds differ in `seed` only); expand and the views reuse it."""
    import orchestrator.spec.check as check
    from trainables.config import ResolvedTrial, trial_hashes, validate_config

    calls = []
    monkeypatch.setattr(check, "validate_config", lambda config: calls.append(dict(config)) or validate_config(config))
    spec = parse_spec(OK)  # 3 arms x 2 seeds
    assert len(calls) == 3
    trials = expand(spec)
    assert spec.base_config(resolved=True)["mix.selection"] == "salient_to_corresponding"
    assert expand(spec) == trials and len(calls) == 3  # nothing resolved again
    for t in trials:
        assert isinstance(t, ResolvedTrial)
        assert t.cfg == validate_config(t.config) and t.cfg.seed == t.seed  # as if resolved on its own
        assert (t.config_hash, t.run_hash) == trial_hashes(t.cfg) and t.epochs == t.cfg.epochs == 10


def test_resolve_trial_names_a_trial_without_a_name():
    from trainables.config import resolve_trial, trial_name

    trial = resolve_trial({"mix.preset": "cutmix", "seed": 3})
    assert trial.name == trial_name(trial.run_hash) == f"trial-{trial.run_hash[:8]}"
    assert resolve_trial({"mix.preset": "cutmix", "seed": 3}, name="x").name == "x"
    assert trial.cfg.seed == 3 and trial.epochs == trial.cfg.epochs


def test_trials_pickle():
    trial = expand(parse_spec(OK))[0]
    assert pickle.loads(pickle.dumps(trial)) == trial


def test_optuna_spec_is_not_a_grid():
    spec = load_spec("hpo")
    assert not is_grid(spec) and spec.seeds == (0,) and spec.search.num_trials >= 1
    assert set(spec.search.space) == {"optim.lr", "optim.weight_decay", "mix.prob"}
    with pytest.raises(UserError, match=r"search_spaces:hpo: search\.algorithm: optuna .*no explicit grid"):
        expand(spec)


# -- shipped specs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_loads_and_expands(name):
    spec = load_spec(name)
    assert spec.name == name and spec.description and spec.metric in METRICS
    assert parse_spec(spec.to_yaml()).model_dump(exclude={"source", "text"}) == \
        spec.model_dump(exclude={"source", "text"})
    if is_grid(spec):
        trials = expand(spec)
        assert len(trials) == spec.num_arms() * len(spec.seeds) and len({t.run_hash for t in trials}) == len(trials)
        assert len({t.name for t in trials}) == len(trials)
        assert len({t.config_hash for t in trials}) == spec.num_arms()


def test_smoke_spec_is_a_small_demo():
    spec = load_spec("smoke")
    assert spec.num_arms() >= 4 and len(spec.seeds) >= 2
    assert spec.base["dataset"] == "synthetic_salient" and spec.base["model"] == "small_cnn"
    assert spec.factor_levels()["mix.preset"] == ["none", "mixup", "cutmix", "saliencymix"]
    assert spec.resources.cpu == 1 and spec.resources.gpu == 0 and spec.base["workers"] == 0
    assert spec.base["data.train_size"] <= 2000 and spec.base["eval.robust_size"] == 200


def test_shipped_spec_files_are_package_data():
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    assert 'search_spaces = ["*.yaml"]' in text
    assert {p.stem for p in (root / "search_spaces").glob("*.yaml")} == set(SHIPPED)


def test_imagenet300_recipe_is_the_released_imagenet_setup():
    """SaliencyMix-ImageNet/train.py (from CutMix): SGD momentum 0.9 with nesterov=True, wd 1e-4, 300 epochs."""
    from trainables.config import validate_config
    from trainables.recipes import RECIPES

    cfg = validate_config({"recipe": "imagenet300"})
    assert cfg.optim.nesterov and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    assert (cfg.epochs, cfg.batch_size, cfg.sched.milestones, cfg.sched.gamma) == (300, 256, (75, 150, 225), 0.1)
    assert "Nesterov" in RECIPES.help("imagenet300")


def test_saliency_methods_says_which_detector_stands_in_for_qin():
    """SaliencyMix Fig. 3a compares Montabone & Soto, Hou & Zhang, Achanta and Qin et al. (2019, a learned BASNet);
    the shipped spec runs spectral_residual_guided instead of the last, and says so."""
    spec = load_spec("saliency_methods")
    assert "Qin et al." in spec.description and "spectral_residual_guided" in spec.description
    assert list(spec.factors["mix.saliency"]) == ["fine_grained", "spectral_residual", "frequency_tuned",
                                                  "spectral_residual_guided"]
