"""The deploy files are ready to apply: every file the deploy README names exists, the
Kubernetes values parse and carry the site's settings, and both images start from an exact tag."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
README = DEPLOY / "README.md"
# a path in the README: deploy/..., kubernetes/..., roles/..., a Dockerfile, a .py or .yaml file
NAMED = re.compile(
    r"(?<![\w./-])((?:\.\./|deploy/)?(?:kubernetes/|roles/|binder/)?"
    r"[\w.-]+(?:/[\w.<>-]+)*\.(?:ya?ml|py|dockerignore)|(?:deploy/)?Dockerfile(?:\.instructor)?)"
    r"(?![\w/-])"
)


def named_files(text: str) -> set[str]:
    return {m.group(1) for m in NAMED.finditer(text) if "<" not in m.group(1)}


def resolve(name: str) -> Path | None:
    """A README's path: relative to the repository root, deploy/ or (a bare name in the
    Kubernetes section) deploy/kubernetes/."""
    for base in (ROOT, DEPLOY, DEPLOY / "kubernetes"):
        if (base / name).exists():
            return base / name
    return None


def test_the_path_finder_sees_what_the_readme_names():
    found = named_files(
        "apply `deploy/kubernetes/nbgrader-exchange-pvc.yaml`, then `kubernetes/values.yaml`, "
        "`Dockerfile.instructor`, `jupyterhub_config.py` and https://hub.jupyter.org/helm-chart/"
    )
    assert found == {
        "deploy/kubernetes/nbgrader-exchange-pvc.yaml",
        "kubernetes/values.yaml",
        "Dockerfile.instructor",
        "jupyterhub_config.py",
    }
    assert resolve("no-such-file.yaml") is None


def test_every_file_the_deploy_readme_names_exists():
    text = README.read_text()
    names = named_files(text)
    # the ones a reader types or opens
    for expected in (
        "deploy/kubernetes/nbgrader-exchange-pvc.yaml",
        "deploy/kubernetes/values.yaml",
        "jupyterhub_config.py",
        "course_hub.py",
        "deploy/Dockerfile.instructor",
    ):
        assert expected in names, expected
    # files made on the server, not in the repository
    made_there = {"nbgrader_config.py"}
    missing = sorted(n for n in names - made_there if resolve(n) is None)
    assert not missing, f"deploy/README.md names files that do not exist: {missing}"
    # every kubectl apply -f names a file of the repository
    for applied in re.findall(r"kubectl apply .*?-f (\S+)", text):
        assert (ROOT / applied).is_file(), applied


def test_the_exchange_claim_is_the_one_values_mounts():
    claim = yaml.safe_load((DEPLOY / "kubernetes" / "nbgrader-exchange-pvc.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    volumes = values["singleuser"]["storage"]["extraVolumes"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes}
    assert claim["metadata"]["name"] in claims


def test_values_carry_https_login_admins_and_culling():
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    https = values["proxy"]["https"]
    assert https["enabled"] is True and https["type"] == "letsencrypt"
    (host,) = https["hosts"]
    assert host and "@" in https["letsencrypt"]["contactEmail"]
    config = values["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "github"
    login = config["GitHubOAuthenticator"]
    assert login["client_id"] and login["client_secret"]
    assert login["oauth_callback_url"] == f"https://{host}/hub/oauth_callback"
    admins = config["Authenticator"]["admin_users"]
    assert admins and set(admins) <= set(config["Authenticator"]["allowed_users"])
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] > 0


def from_lines(dockerfile: Path) -> list[str]:
    """The base images of a Dockerfile, with ``ARG`` defaults put in."""
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    images = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image) for image in images]


def test_both_images_start_from_an_exact_tag():
    for name in ("Dockerfile", "Dockerfile.instructor"):
        (image,) = from_lines(DEPLOY / name)
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        # a date (2024-03-31) or a full version (0.1.0): not latest, not python-3.11
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d+\.\d+\.\d+", tag), f"{name}: {image}"
