"""The analysis's PromQL, text for text: each check's query for one scope, and user templates."""

from __future__ import annotations

import pytest

from optimodel_operator.analysis import queries
from optimodel_operator.analysis.queries import Scope

SCOPE = Scope(namespace="ml", model="digits", revision="r2", pool="cpu", window="30s")
SEL = 'namespace="ml", model="digits", revision="r2", pool="cpu"'


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (queries.p99_latency_ms,
         f"1000 * histogram_quantile(0.99, sum by (le) (rate(optimodel_request_duration_seconds_bucket{{{SEL}}}[30s])))"),
        (queries.error_rate,
         f'(sum(rate(optimodel_requests_total{{{SEL}, code=~"5..|429"}}[30s])) or vector(0))'
         f" / sum(rate(optimodel_requests_total{{{SEL}}}[30s]))"),
        (queries.request_count, f"sum(increase(optimodel_requests_total{{{SEL}}}[30s]))"),
        (queries.input_drift_psi, f"max(last_over_time(optimodel_drift_max_psi{{{SEL}}}[30s])"
                                  f" and last_over_time(optimodel_drift_window_samples{{{SEL}}}[30s]) >= 500)"),
        (queries.output_bins, f"sum by (bin) (increase(optimodel_output_bin_total{{{SEL}}}[30s]))"),
    ],
    ids=["p99", "error-rate", "request-count", "input-drift", "output-bins"],
)
def test_each_query_is_scoped_to_namespace_model_revision_pool_and_window(build, expected) -> None:
    assert build(SCOPE) == expected


def test_the_stable_revisions_bins_differ_only_by_revision() -> None:
    stable = queries.output_bins(SCOPE.with_revision("r1"))
    assert stable == queries.output_bins(SCOPE).replace('revision="r2"', 'revision="r1"')


def test_label_values_are_escaped_as_promql_strings() -> None:
    scope = Scope(namespace="ml", model='we"ird\\', revision="r", pool="p")
    assert 'model="we\\"ird\\\\"' in queries.request_count(scope)


@pytest.mark.parametrize("window", ["30 s", "1d", "", "5"])
def test_a_window_that_is_not_a_duration_is_refused(window: str) -> None:
    with pytest.raises(ValueError, match="window"):
        Scope("ml", "m", "r", "p", window=window)


def test_user_templates_get_the_scope_and_the_window() -> None:
    template = 'sum(rate(my_metric{namespace="{{namespace}}", model="{{model}}", revision="{{revision}}", ' \
               'pool="{{pool}}"}[{{window}}]))'
    assert queries.render(template, SCOPE) == \
        'sum(rate(my_metric{namespace="ml", model="digits", revision="r2", pool="cpu"}[30s]))'


def test_user_template_values_are_escaped_inside_quotes() -> None:
    scope = Scope(namespace="ml", model='a"b', revision="r", pool="p")
    assert queries.render('x{model="{{model}}"}', scope) == 'x{model="a\\"b"}'


@pytest.mark.parametrize(
    ("template", "problems"),
    [
        ('x{a="b"}', []),
        ("{{namespace}}{{model}}", []),
        ("x{{node}}", ["{{node}}"]),
        ("x{{ namespace }}", ["{{ namespace }}"]),
        ("x{{namespace", ["{{namespace"]),
    ],
)
def test_unknown_placeholders_are_named(template: str, problems: list[str]) -> None:
    assert queries.template_errors(template) == problems
    if problems:
        with pytest.raises(ValueError, match="placeholders"):
            queries.render(template, SCOPE)
