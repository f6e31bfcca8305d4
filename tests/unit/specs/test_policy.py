"""The operator policy: loading the file, and what it refuses in a spec (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specs import SpecError, load_spec_text
from specs.errors import UnsafePath
from specs.policy import Policy, check_host_path, check_policy, is_loader_var, load_policy
from tests.conftest import EXAMPLES

GOOD = (EXAMPLES / "quickstart-sim.yaml").read_text()
DOCKER = (EXAMPLES / "vllm-docker.yaml").read_text()
KUBERNETES = (EXAMPLES / "trtllm.yaml").read_text()


def refused(text: str, policy: Policy | None = None, checkout: Path | None = None) -> list[str]:
    loaded = load_spec_text(text, "s.yaml")
    return [str(p) for p in check_policy(loaded, policy or Policy(), checkout=checkout)]


def with_env(env: str) -> str:
    return GOOD.replace("  engine:\n", f"  engine:\n    env: {env}\n", 1)


def test_the_examples_pass_the_default_policy_but_a_host_mount_does_not() -> None:
    assert refused(GOOD) == []
    assert refused(DOCKER) == []
    volume = "    volumes: ['/srv/models:/models:ro']\n"
    mounted = DOCKER.replace("    kind: docker\n", "    kind: docker\n" + volume, 1)
    assert mounted != DOCKER
    [problem] = refused(mounted)
    assert "spec.backend.volumes[0]" in problem and "volumeRoots" in problem


@pytest.mark.parametrize("name", ["PYTHONPATH", "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "HF_ENDPOINT"])
def test_loader_variables_are_refused_at_their_line(name: str) -> None:
    [problem] = refused(with_env(f"{{{name}: /x}}"))
    line = next(i for i, t in enumerate(with_env("{X: y}").splitlines(), 1) if "env:" in t)
    assert problem.startswith(f"s.yaml:{line}: spec.engine.env.{name}:")
    assert "allowLoaderEnv" in problem
    assert refused(with_env(f"{{{name}: /x}}"), Policy(allow_loader_env=True)) == []


def test_spec_env_is_an_allowlist_and_from_env_reads_only_secret_env() -> None:
    assert refused(with_env("{VLLM_ATTENTION_BACKEND: FLASH_ATTN, HF_TOKEN: {fromEnv: HF_TOKEN}}")) == []
    [problem] = refused(with_env("{MY_KNOB: '1'}"))
    assert "spec.engine.env.MY_KNOB" in problem and "add it to env" in problem
    assert refused(with_env("{MY_KNOB: '1'}"), Policy(env=("MY_*",))) == []
    [problem] = refused(with_env("{HF_TOKEN: {fromEnv: AUTOTUNER_GIT_TOKEN}}"))
    assert "spec.engine.env.HF_TOKEN.fromEnv" in problem and "secretEnv" in problem


def test_engines_images_remote_code_and_caps() -> None:
    [problem] = refused(GOOD, Policy(engines=("vllm",)))
    assert "spec.engine.name" in problem and "'sim' is not allowed" in problem
    image = GOOD.replace("  engine:\n", "  engine:\n    image: evil.example.com/miner:latest\n", 1)
    [problem] = refused(image)
    assert "spec.engine.image" in problem and "images in the operator policy" in problem
    assert refused(GOOD.replace("  engine:\n", "  engine:\n    image: vllm/vllm-openai:v0.11.0\n", 1)) == []
    remote = GOOD.replace("args: {", "args: {trust-remote-code: true, ", 1)
    assert any("allowRemoteCode" in p for p in refused(remote))
    caps = Policy(max_parallelism=1, max_concurrency=4, max_requests_per_level=10)
    found = refused(GOOD.replace("seed: 7", "seed: 7\n    parallelism: 2"), caps)
    assert any("spec.search.parallelism" in p and "maxParallelism" in p for p in found)
    assert any("maxConcurrency" in p for p in found)
    assert any("maxRequestsPerLevel" in p for p in found)


def test_dataset_and_model_paths_stay_inside_the_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "repo"
    (checkout / "data").mkdir(parents=True)
    (checkout / "data" / "ok.jsonl").write_text('{"prompt": "hi"}\n')
    (checkout / "data" / "evil.jsonl").symlink_to("/etc/passwd")
    dataset = "dataset: {kind: synthetic, input: {mean: 1024, stddev: 128}, output: {mean: 128}}"
    assert dataset in GOOD

    def path_spec(path: str) -> str:
        return GOOD.replace(dataset, f"dataset: {{kind: jsonl, path: {path}, output: {{mean: 8}}}}")

    assert refused(path_spec("data/ok.jsonl"), checkout=checkout) == []
    for bad in ("/etc/passwd", "../../etc/passwd", "data/evil.jsonl", "/proc/self/environ", "/dev/zero"):
        [problem] = refused(path_spec(bad), checkout=checkout)
        assert "spec.workload.dataset.path" in problem and "dataRoots" in problem, bad
        assert str(checkout) not in problem  # the checkout is "the repository" in messages
    roots = Policy(data_roots=(Path("/etc"),))
    assert refused(path_spec("/etc/passwd"), roots, checkout=checkout) == []
    model = GOOD.replace("id: llama-3-8b", "id: /etc/ssh")
    assert any("spec.model.id" in p for p in refused(model, checkout=checkout))
    tokenizer = GOOD.replace("id: llama-3-8b", "id: llama-3-8b, tokenizer: ../../etc")
    assert any("spec.model.tokenizer" in p for p in refused(tokenizer, checkout=checkout))


def test_kubernetes_namespaces_service_accounts_and_claims() -> None:
    [problem] = refused(KUBERNETES)
    assert "spec.backend.namespace" in problem and "'llm-tuning'" in problem
    assert refused(KUBERNETES, Policy(namespaces=("llm-*",))) == []
    text = KUBERNETES.replace(
        "namespace: llm-tuning", "namespace: llm-tuning\n    serviceAccount: cluster-admin"
    )
    text = text.replace("startupTimeout: 30m", "startupTimeout: 30m\n    modelCachePvc: other-team")
    found = refused(text, Policy(namespaces=("llm-*",)))
    assert any("spec.backend.serviceAccount" in p for p in found)
    assert any("spec.backend.modelCachePvc" in p for p in found)
    both = Policy(namespaces=("llm-*",), service_accounts=("cluster-admin",), volume_claims=("other-team",))
    assert refused(text, both) == []


def test_dataset_urls() -> None:
    dataset = "dataset: {kind: synthetic, input: {mean: 1024, stddev: 128}, output: {mean: 128}}"
    text = GOOD.replace(
        dataset, "dataset: {kind: jsonl, url: 'https://intranet.example/x.jsonl', output: {mean: 8}}"
    )
    assert refused(text) == []
    [problem] = refused(text, Policy(dataset_urls=("https://huggingface.co/*",)))
    assert "spec.workload.dataset.url" in problem and "datasetUrls" in problem


def test_check_host_path(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "escape").symlink_to("/etc")
    assert (
        check_host_path(tmp_path / "cache" / "models", [tmp_path / "cache"])
        == (tmp_path / "cache" / "models").resolve()
    )
    with pytest.raises(UnsafePath, match="volumeRoots"):
        check_host_path(tmp_path / "cache" / "escape", [tmp_path / "cache"])
    with pytest.raises(UnsafePath, match="no host folders"):
        check_host_path("/data", [])
    with pytest.raises(UnsafePath, match="absolute"):
        check_host_path("relative/dir", [tmp_path])


def test_is_loader_var_is_case_insensitive() -> None:
    assert is_loader_var("ld_preload") and is_loader_var("https_proxy") and is_loader_var("NCCL_NET_PLUGIN")
    assert not is_loader_var("VLLM_ATTENTION_BACKEND")


def test_load_policy_file(tmp_path: Path) -> None:
    assert load_policy(None) == Policy()
    path = tmp_path / "policy.yaml"
    path.write_text("engines: [sim]\nmaxConcurrency: 64\ndataRoots: [/data/sets]\nallowLoaderEnv: true\n")
    policy = load_policy(path)
    assert policy.engines == ("sim",) and policy.max_concurrency == 64
    assert policy.data_roots == (Path("/data/sets"),) and policy.allow_loader_env
    assert policy.images == Policy().images  # what the file does not say keeps the safe default


def test_a_bad_policy_file_is_located(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("engines: [sim]\nmaxConcurency: 64\n")
    with pytest.raises(SpecError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:2: maxConcurency: unknown setting")
    assert "did you mean 'maxConcurrency'" in str(info.value)
    path.write_text("dataRoots: [relative]\nengines: [nope]\n")
    with pytest.raises(SpecError, match="absolute"):
        load_policy(path)


def test_the_example_policy_file_loads_and_keeps_the_defaults() -> None:
    example = Path(__file__).resolve().parents[3] / "systemd" / "policy.example.yaml"
    policy = load_policy(example)
    default = Policy()
    assert set(policy.images) <= set(default.images)
    assert (policy.engines, policy.secret_env, policy.data_roots, policy.volume_roots) == (
        default.engines,
        default.secret_env,
        default.data_roots,
        default.volume_roots,
    )
    assert (policy.max_parallelism, policy.max_concurrency, policy.allow_loader_env) == (8, 1024, False)
