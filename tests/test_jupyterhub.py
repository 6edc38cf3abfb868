"""The class server: deploy/jupyterhub_config.py started for real on 127.0.0.1.

An instructor and two students log in through JupyterHub's REST API (user name and password)
and start their servers. The instructor generates and releases an assignment with the
formgrader's API; a student's assignment list shows it only after that; the student fetches it
(the student version, no solutions), submits it, and the instructor collects the submission
under the student's JupyterHub name, autogrades it (in the bubblewrap sandbox), generates and
releases the feedback, which the student fetches. Every user's home holds the lectures, and no
role's JupyterLab asks about Jupyter news. Each role gets its own nbgrader tools, and instructors may
open their students' servers, not the other way round.

The settings that cannot work stop the hub at start with a message naming the setting; those
are checked one by one, and once by starting the hub itself.

The proxy is the PyPI package configurable-http-proxy (a Python implementation of JupyterHub's
proxy, with the same command and options) that the dev extra installs beside Python.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "jupyterhub_config.py"
ASSIGNMENT = "02_saturation"
PASSWORD = "course-server-test"  # SharedPasswordAuthenticator: the same for every user
INSTRUCTOR, STUDENT, OTHER = "teacher", "ada", "ben"  # ben is on the list, never logs in
STUDENTS = (STUDENT, OTHER)

requests = pytest.importorskip("requests")
pytest.importorskip("jupyterhub", reason="jupyterhub is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("nbgrader", reason="nbgrader is in the instructor extra")


def load_course_hub():
    spec = importlib.util.spec_from_file_location("course_hub", DEPLOY / "course_hub.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["course_hub"] = module
    spec.loader.exec_module(module)
    return module


course_hub = load_course_hub()


# --- a course directory and an exchange, as the deploy README sets them up ------------------


def make_course(tmp: Path) -> dict:
    """A copy of the course, an exchange (mode 1777) and the course's exchange linked to it."""
    exchange = tmp / "exchange"
    exchange.mkdir()
    exchange.chmod(0o1777)
    course = tmp / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    shutil.copytree(ROOT / "exercises", course / "exercises")
    (course / "grading").mkdir()
    (course / "grading" / "exchange").symlink_to(exchange)
    lectures = tmp / "share" / "lectures"  # the install's copy, outside the course directory
    shutil.copytree(ROOT / "lectures", lectures, ignore=shutil.ignore_patterns(".*"))
    return {
        "COURSE_LECTURES": str(lectures),
        "COURSE_DIR": str(course),
        "COURSE_EXCHANGE": str(exchange),
        "COURSE_INSTRUCTORS": INSTRUCTOR,
        "COURSE_STUDENTS": ",".join(STUDENTS),
        "COURSE_MEM_LIMIT": "1G",
        "COURSE_CPU_LIMIT": "1",
        "COURSE_SPAWNER": "simple",
    }


@pytest.fixture(scope="module")
def settings_env(tmp_path_factory) -> dict:
    return make_course(tmp_path_factory.mktemp("class"))


def hub_environ(settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSE_", "JUPYTER"))}
    env.update(settings, OMP_NUM_THREADS="1")
    # the hub starts configurable-http-proxy from the PATH: this environment's own, first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the single-user servers import lecture_lib and nbgrader from this checkout's environment
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


# --- settings that cannot work fail at start ------------------------------------------------


def settings_from(env: dict, **changes) -> "course_hub.Settings":
    return course_hub.Settings.from_environ({**env, **changes})


def test_good_settings_pass_and_name_the_course(settings_env):
    course = course_hub.check(settings_from(settings_env))
    assert course.course_id == "explaining-convnets"  # read from the course's nbgrader_config.py
    assert course.exchange.resolve() == Path(settings_env["COURSE_EXCHANGE"]).resolve()


def test_a_missing_exchange_is_named_with_the_fix(settings_env, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check(settings_from(settings_env, COURSE_EXCHANGE=str(missing)))
    message = str(error.value)
    assert f"COURSE_EXCHANGE={missing}" in message and "does not exist" in message
    assert f"mkdir -p {missing}" in message and f"chmod 1777 {missing}" in message


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o1775, 0o1733])
def test_an_exchange_without_1777_is_named_with_the_fix(settings_env, tmp_path, mode):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    exchange.chmod(mode)
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check_exchange(exchange)
    message = str(error.value)
    assert f"COURSE_EXCHANGE={exchange} has mode {mode:04o}" in message
    assert "sticky bit" in message and f"chmod 1777 {exchange}" in message


def test_an_exchange_that_is_a_file_or_relative_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(course_hub.SettingError, match="is a file, not a folder"):
        course_hub.check_exchange(tmp_path / "file")
    with pytest.raises(course_hub.SettingError, match="relative path"):
        course_hub.check_exchange(Path("exchange"))


def test_a_course_dir_without_nbgrader_config_is_named(settings_env, tmp_path):
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check(settings_from(settings_env, COURSE_DIR=str(tmp_path)))
    assert f"COURSE_DIR={tmp_path}: no nbgrader_config.py" in str(error.value)
    assert "git clone" in str(error.value)


def test_a_course_exchange_that_is_not_the_class_exchange_is_named(settings_env, tmp_path):
    course = tmp_path / "course"
    shutil.copytree(settings_env["COURSE_DIR"], course, symlinks=True)
    (course / "grading" / "exchange").unlink()
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check(settings_from(settings_env, COURSE_DIR=str(course)))
    message = str(error.value)
    exchange = settings_env["COURSE_EXCHANGE"]
    assert f"COURSE_EXCHANGE={exchange}" in message and "Exchange.root" in message
    assert f"ln -s {exchange} {course / 'grading' / 'exchange'}" in message


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"COURSE_INSTRUCTORS": " "}, "COURSE_INSTRUCTORS is empty"),
        ({"COURSE_STUDENTS": "ada,teacher"}, "both name teacher"),
        ({"COURSE_STUDENTS": "ada,b+c"}, "COURSE_STUDENTS names 'b+c'"),
        ({"COURSE_MEM_LIMIT": "2GB"}, "COURSE_MEM_LIMIT='2GB' is not a memory size"),
        ({"COURSE_CPU_LIMIT": "0"}, "COURSE_CPU_LIMIT='0' is not a number of CPU cores"),
        ({"COURSE_CPU_LIMIT": "one"}, "COURSE_CPU_LIMIT='one'"),
        ({"COURSE_SPAWNER": "docker"}, "COURSE_SPAWNER='docker' is unknown"),
        ({"COURSE_IDLE_TIMEOUT": "1h"}, "COURSE_IDLE_TIMEOUT='1h' is not a number of seconds"),
        ({"COURSE_SSL_CERT": "/etc/hostname"}, "COURSE_SSL_CERT is set but COURSE_SSL_KEY"),
        ({"COURSE_SSL_KEY": "/etc/hostname"}, "COURSE_SSL_KEY is set but COURSE_SSL_CERT"),
        (
            {"COURSE_SSL_CERT": "/nowhere.pem", "COURSE_SSL_KEY": "/etc/hostname"},
            "COURSE_SSL_CERT=/nowhere.pem: no such file",
        ),
        ({"COURSE_LECTURES": "/nowhere"}, "COURSE_LECTURES=/nowhere: no lecture notebooks"),
    ],
)
def test_bad_users_limits_and_spawners_are_named(settings_env, changes, words):
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check(settings_from(settings_env, **changes))
    assert words in str(error.value)


def test_a_course_directory_students_could_read_stops_the_hub(tmp_path):
    env = make_course(tmp_path)
    course = Path(env["COURSE_DIR"])
    (course / ".git").mkdir()
    course.chmod(0o755)
    (course / "solutions").chmod(0o755)
    settings = settings_from(env, COURSE_SPAWNER="local")
    with pytest.raises(course_hub.SettingError) as error:
        course_hub.check(settings)
    message = str(error.value)
    assert str(course / "solutions") in message
    assert f"chmod -R o-rwx {course}" in message and "chgrp -R instructors" in message
    subprocess.run(["chmod", "-R", "o-rwx", str(course)], check=True)
    for name in course_hub.PRIVATE:  # closed, whichever way a student would look
        assert not course_hub.readable_by(course, course / name, None)
        assert not course_hub.readable_by(course, course / name, STUDENTS[0])
    course.chmod(0o751)  # others may pass through the folder, but not into what it holds
    for name in course_hub.PRIVATE:
        (course / name).chmod(0o750)
    assert course_hub.check(settings).course_id == "explaining-convnets"
    (course / "grading").chmod(0o755)
    with pytest.raises(course_hub.SettingError, match="grading"):
        course_hub.check(settings)


def test_unreadable_ssl_files_and_lectures_inside_the_course_are_named(
    settings_env, tmp_path, monkeypatch
):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    key.write_text("key")
    node = tmp_path / "bin" / "configurable-http-proxy"  # npm's proxy, which does HTTPS
    node.parent.mkdir()
    node.write_text("#!/usr/bin/env node\n")
    node.chmod(0o755)
    monkeypatch.setenv("PATH", str(node.parent))
    https = settings_from(settings_env, COURSE_SSL_CERT=str(cert), COURSE_SSL_KEY=str(key))
    course_hub.check(https)
    c = load_config({**settings_env, "COURSE_SSL_CERT": str(cert), "COURSE_SSL_KEY": str(key)})
    assert (c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key) == (str(cert), str(key))
    if os.geteuid() != 0:  # root reads every file
        key.chmod(0)
        with pytest.raises(course_hub.SettingError, match=f"COURSE_SSL_KEY={key}: the hub cannot"):
            course_hub.check(https)
    inside = Path(settings_env["COURSE_DIR"]) / "lectures"
    shutil.copytree(settings_env["COURSE_LECTURES"], inside)
    with pytest.raises(course_hub.SettingError, match="is inside the course directory"):
        course_hub.check(settings_from(settings_env, COURSE_LECTURES=str(inside)))
    shutil.rmtree(inside)


def test_lectures_are_copied_home_missing_files_only(settings_env, tmp_path):
    source = tmp_path / "share" / "lectures"
    shutil.copytree(settings_env["COURSE_LECTURES"], source)
    home = tmp_path / "home"
    home.mkdir()

    def start():
        env = {**os.environ, "HOME": str(home)}
        subprocess.run([sys.executable, "-c", course_hub.COPY_LECTURES, str(source)],
                       env=env, check=True, timeout=60)  # fmt: skip

    start()
    names = sorted(p.name for p in source.glob("*.ipynb"))
    assert names and sorted(p.name for p in (home / "lectures").glob("*.ipynb")) == names
    edited = home / "lectures" / names[0]
    edited.write_text("the student's own work")
    (source / "99_new.ipynb").write_text("a lecture added later in the term")
    start()
    assert edited.read_text() == "the student's own work"  # never overwritten
    assert (home / "lectures" / "99_new.ipynb").read_text() == "a lecture added later in the term"


def test_the_idle_culler_is_a_hub_service_with_its_role(settings_env):
    c = load_config(settings_env)
    (service,) = c.JupyterHub.services
    assert service["command"][1:] == ["-m", "jupyterhub_idle_culler", "--timeout=3600"]
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "idle-culler"]
    assert role["services"] == ["idle-culler"] and "delete:servers" in role["scopes"]
    help_text = subprocess.run(service["command"][:3] + ["--help"], capture_output=True,
                               text=True, timeout=60).stdout  # fmt: skip
    assert "--timeout" in help_text
    off = load_config({**settings_env, "COURSE_IDLE_TIMEOUT": "0"})
    assert "services" not in off.JupyterHub


def test_the_systemd_spawner_says_what_to_install_when_missing(settings_env):
    try:
        import systemdspawner  # noqa: F401
    except ImportError:
        with pytest.raises(course_hub.SettingError, match="pip install jupyterhub-systemdspawner"):
            course_hub.check(settings_from(settings_env, COURSE_SPAWNER="systemd"))
    else:
        course_hub.check(settings_from(settings_env, COURSE_SPAWNER="systemd"))


def test_jupyterhub_stops_at_start_on_a_bad_setting(settings_env, tmp_path):
    env = hub_environ({**settings_env, "COURSE_EXCHANGE": str(tmp_path / "nowhere")})
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "The course server cannot start: COURSE_EXCHANGE=" in result.stderr
    assert "does not exist" in result.stderr
    assert not (tmp_path / "jupyterhub.sqlite").exists()  # nothing was started


# --- the configuration itself ---------------------------------------------------------------


def load_config(env: dict):
    """deploy/jupyterhub_config.py as JupyterHub loads it, with ``env`` as the environment."""
    from traitlets.config.loader import PyFileConfigLoader

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return PyFileConfigLoader(CONFIG.name, path=str(DEPLOY)).load_config()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_config_sets_roles_groups_exchange_and_limits(settings_env):
    c = load_config(settings_env)
    assert c.JupyterHub.load_groups == {
        "formgrade-explaining-convnets": {"users": [INSTRUCTOR]},
        "nbgrader-explaining-convnets": {"users": list(STUDENTS)},
    }
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "instructor"]
    assert role["groups"] == ["formgrade-explaining-convnets"]
    assert {f"access:servers!user={name}" for name in STUDENTS} <= set(role["scopes"])
    assert "servers!group=nbgrader-explaining-convnets" in role["scopes"]
    assert c.Authenticator.allowed_users == {INSTRUCTOR, *STUDENTS}
    assert (c.Spawner.mem_limit, c.Spawner.cpu_limit) == ("1G", 1.0)
    assert c.Spawner.environment["COURSE_EXCHANGE"] == settings_env["COURSE_EXCHANGE"]
    assert c.Spawner.environment["JUPYTER_CONFIG_PATH"] == str(DEPLOY / "roles" / "student")
    (override,) = c.Spawner.group_overrides.values()
    assert override["groups"] == ["formgrade-explaining-convnets"]
    spawner = override["spawner_override"]
    assert spawner["notebook_dir"] == settings_env["COURSE_DIR"]
    assert spawner["environment"]["JUPYTER_CONFIG_PATH"] == str(DEPLOY / "roles" / "instructor")


def test_role_configs_split_nbgrader_tools():
    def disabled(role):
        page = json.loads((DEPLOY / "roles" / role / "labconfig" / "page_config.json").read_text())
        return {name for name, off in page["disabledExtensions"].items() if off}

    def servers_off(role):
        server = json.loads((DEPLOY / "roles" / role / "jupyter_server_config.json").read_text())
        return {n for n, on in server["ServerApp"]["jpserver_extensions"].items() if not on}

    instructor_tools = {"formgrader", "create-assignment", "course-list"}
    assert disabled("student") == {f"@jupyter/nbgrader:{t}" for t in instructor_tools}
    assert disabled("instructor") == set()
    assert servers_off("student") == {
        "nbgrader.server_extensions.formgrader",
        "nbgrader.server_extensions.course_list",
    }
    assert servers_off("instructor") == set()
    for role in ("student", "instructor"):  # no "receive official Jupyter news?" prompt
        overrides = DEPLOY / "roles" / role / "labsettings" / "overrides.json"
        news = json.loads(overrides.read_text())["@jupyterlab/apputils-extension:notification"]
        assert news == {"fetchNews": "false"}


# --- the hub, started for real --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, condition, timeout: float, hub=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub is not None and hub["process"].poll() is not None:
            pytest.fail(f"JupyterHub exited while waiting for {what}:\n{hub_log(hub)}")
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{hub_log(hub) if hub else ''}")


def hub_log(hub) -> str:
    return hub["log"].read_text()[-6000:]


@pytest.fixture(scope="module")
def hub(settings_env, tmp_path_factory):
    path = hub_environ(settings_env)["PATH"]
    if shutil.which("configurable-http-proxy", path=path) is None:
        pytest.fail(
            "configurable-http-proxy is not installed beside Python: it comes with the dev "
            "extra, pip install -e '.[dev]'"
        )
    state = tmp_path_factory.mktemp("hub")
    (state / "home").mkdir()
    port = free_port()
    command = [
        sys.executable, "-m", "jupyterhub", "-f", str(CONFIG),
        f"--JupyterHub.bind_url=http://127.0.0.1:{port}",
        f"--JupyterHub.hub_bind_url=http://127.0.0.1:{free_port()}",
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{free_port()}",
        "--JupyterHub.authenticator_class=shared-password",
        f"--SharedPasswordAuthenticator.user_password={PASSWORD}",
        f"--SimpleLocalProcessSpawner.home_dir_template={state / 'home' / '{username}'}",
        "--Spawner.start_timeout=120",
        "--Spawner.http_timeout=120",
    ]  # fmt: skip
    log = state / "hub.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=state, env=hub_environ(settings_env), stdout=out, stderr=out,
            start_new_session=True,
        )  # fmt: skip
    hub = {
        "url": f"http://127.0.0.1:{port}",
        "process": process,
        "log": log,
        "home": state / "home",
        "lectures": settings_env["COURSE_LECTURES"],
    }
    try:

        def up():
            try:
                return requests.get(hub["url"] + "/hub/api/", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for("the hub to answer", up, 90, hub)
        hub["tokens"] = {name: login(hub, name) for name in (INSTRUCTOR, STUDENT, OTHER)}
        for name in (INSTRUCTOR, STUDENT):
            response = api(hub, name, "POST", f"/hub/api/users/{name}/server")
            assert response.status_code in (201, 202), response.text
        for name in (INSTRUCTOR, STUDENT):
            wait_for(f"{name}'s server", lambda name=name: server_ready(hub, name), 180, hub)
        yield hub
    finally:
        process.send_signal(signal.SIGTERM)  # the hub stops the servers and the proxy it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_https_with_pypis_proxy_stops_the_hub_with_the_fix(settings_env, tmp_path):
    """PyPI's configurable-http-proxy (the tests' proxy) has no HTTPS: the hub says so at start,
    before its proxy would fail; npm's proxy (deploy/README.md: Install) does HTTPS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    key.write_text("key")
    https = {**settings_env, "COURSE_SSL_CERT": str(cert), "COURSE_SSL_KEY": str(key)}
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)],
        cwd=tmp_path,
        env=hub_environ(https),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "The course server cannot start: COURSE_SSL_CERT is set, but" in result.stderr
    assert "npm install -g configurable-http-proxy" in result.stderr
    assert not (tmp_path / "jupyterhub.sqlite").exists()


def login(hub, name: str, password: str = PASSWORD) -> str:
    """Log in with user name and password through the REST API; return the user's token."""
    response = requests.post(
        f"{hub['url']}/hub/api/users/{name}/tokens",
        json={"auth": {"username": name, "password": password}, "note": "test"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["token"]


def api(hub, name: str, method: str, path: str, timeout=120, **kwargs) -> "requests.Response":
    """A request to the hub or a server with ``name``'s token."""
    headers = {"Authorization": f"token {hub['tokens'][name]}"}
    return requests.request(method, hub["url"] + path, headers=headers, timeout=timeout, **kwargs)


def server_ready(hub, name: str) -> bool:
    model = api(hub, name, "GET", f"/hub/api/users/{name}").json()
    server = model.get("servers", {}).get("")
    return bool(server and server["ready"])


def assignments(hub, student: str) -> dict:
    """What the student's Assignments tab lists: ``{assignment_id: status}``."""
    response = api(hub, student, "GET", f"/user/{student}/assignments",
                   params={"course_id": "explaining-convnets"})  # fmt: skip
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["success"], listing
    return {a["assignment_id"]: a["status"] for a in listing["value"]}


def formgrader(hub, action: str) -> dict:
    """Press a formgrader button for the assignment, as the instructor."""
    path = f"/user/{INSTRUCTOR}/formgrader/api/assignment/{ASSIGNMENT}/{action}"
    response = api(hub, INSTRUCTOR, "POST", path)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"], result
    return result


def test_a_wrong_password_gets_no_token(hub):
    response = requests.post(
        f"{hub['url']}/hub/api/users/ada/tokens",
        json={"auth": {"username": "ada", "password": "not-the-password"}},
        timeout=30,
    )
    assert response.status_code == 403


def test_the_whole_homework_cycle_runs_through_the_hub(hub):
    """Release, fetch, submit, collect, autograde (in the sandbox), feedback, as users do."""
    student = STUDENT
    assert ASSIGNMENT not in assignments(hub, student)

    formgrader(hub, "assign")  # generate the student version
    formgrader(hub, "release")
    assert assignments(hub, student)[ASSIGNMENT] == "released"

    response = api(hub, student, "POST", f"/user/{student}/assignments/fetch",
                   json={"course_id": "explaining-convnets", "assignment_id": ASSIGNMENT})  # fmt: skip
    assert response.status_code == 200, response.text
    assert assignments(hub, student)[ASSIGNMENT] == "fetched"
    path = f"/user/{student}/api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    response = api(hub, student, "GET", path)
    assert response.status_code == 200, response.text
    text = json.dumps(response.json()["content"])
    assert "YOUR CODE HERE" in text and "BEGIN SOLUTION" not in text
    assert (hub["home"] / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()

    response = api(hub, student, "POST", f"/user/{student}/assignments/submit",
                   json={"course_id": "explaining-convnets", "assignment_id": ASSIGNMENT})  # fmt: skip
    assert response.status_code == 200 and response.json()["success"], response.text
    assert assignments(hub, student)[ASSIGNMENT] == "submitted"

    formgrader(hub, "collect")
    response = api(
        hub, INSTRUCTOR, "GET", f"/user/{INSTRUCTOR}/formgrader/api/submissions/{ASSIGNMENT}"
    )
    submitted = {s["student"] for s in response.json() if s["submitted"]}
    assert submitted == {student}  # the JupyterHub name, not the operating-system user

    path = f"/user/{INSTRUCTOR}/formgrader/api/submission/{ASSIGNMENT}/{student}/autograde"
    response = api(hub, INSTRUCTOR, "POST", path, timeout=600)
    assert response.status_code == 200, response.text
    assert response.json()["success"], response.json()["log"]
    response = api(
        hub, INSTRUCTOR, "GET", f"/user/{INSTRUCTOR}/formgrader/api/submissions/{ASSIGNMENT}"
    )
    (graded,) = [s for s in response.json() if s["student"] == student]
    assert graded["autograded"] and graded["max_score"] > 0
    assert graded["score"] < graded["max_score"]  # the exercise handed in unanswered
    assert "Running the notebook in a bubblewrap sandbox" in hub["log"].read_text()

    formgrader(hub, "generate_feedback")
    formgrader(hub, "release_feedback")
    response = api(hub, student, "POST", f"/user/{student}/assignments/fetch_feedback",
                   json={"course_id": "explaining-convnets", "assignment_id": ASSIGNMENT})  # fmt: skip
    assert response.status_code == 200 and response.json()["success"], response.text
    (feedback,) = (hub["home"] / student / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html")
    html = feedback.read_text()
    assert f"{ASSIGNMENT}" in html and "Score" in html
    assert "BEGIN SOLUTION" not in html  # the student's own work, graded


def page_config(hub, name: str) -> dict:
    response = api(hub, name, "GET", f"/user/{name}/lab")
    assert response.status_code == 200, response.text
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      response.text, flags=re.S)  # fmt: skip
    return json.loads(found.group(1))


def test_each_role_gets_its_nbgrader_tools(hub):
    student = page_config(hub, STUDENT)["disabledExtensions"]
    instructor = page_config(hub, INSTRUCTOR)["disabledExtensions"]
    for tool in ("formgrader", "create-assignment", "course-list"):
        assert f"@jupyter/nbgrader:{tool}" in student
        assert f"@jupyter/nbgrader:{tool}" not in instructor
    assert "@jupyter/nbgrader:assignment-list" not in student
    path = "/formgrader/api/assignments"
    assert api(hub, INSTRUCTOR, "GET", f"/user/{INSTRUCTOR}{path}").status_code == 200
    assert api(hub, STUDENT, "GET", f"/user/{STUDENT}{path}").status_code == 404


def test_news_prompt_is_off_and_lectures_are_home(hub):
    for name in (INSTRUCTOR, STUDENT):
        path = f"/user/{name}/lab/api/settings/@jupyterlab/apputils-extension:notification"
        response = api(hub, name, "GET", path)
        assert response.status_code == 200, response.text
        setting = response.json()
        assert setting["schema"]["properties"]["fetchNews"]["default"] == "false"
        assert setting["settings"].get("fetchNews", "false") == "false"
    response = api(hub, STUDENT, "GET", f"/user/{STUDENT}/api/contents/lectures")
    assert response.status_code == 200, response.text
    listed = {item["name"] for item in response.json()["content"]}
    installed = {p.name for p in Path(hub["lectures"]).glob("*.ipynb")}
    assert installed and installed <= listed


def test_the_idle_culler_runs_and_lists_the_servers(hub):
    log = hub["log"].read_text()
    assert "Starting managed service idle-culler" in log
    # its role lets it read the users and their servers' activity (a 403 otherwise)
    assert re.search(r"200 GET /hub/api/users\?state=\S* \(idle-culler@", log), log[-3000:]


def test_instructors_may_open_students_servers_not_the_other_way(hub):
    assert api(hub, INSTRUCTOR, "GET", f"/user/{STUDENT}/api/contents").status_code == 200
    assert api(hub, OTHER, "GET", f"/user/{STUDENT}/api/contents").status_code == 403
    assert api(hub, STUDENT, "GET", f"/user/{INSTRUCTOR}/api/contents").status_code == 403


# --- past one server: the Kubernetes values, the user image, Binder ---------------------------


def test_kubernetes_values_name_the_image_and_share_the_exchange():
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    singleuser = values["singleuser"]
    assert singleuser["image"]["name"] and singleuser["image"]["tag"]
    mounts = {m["mountPath"]: m["name"] for m in singleuser["storage"]["extraVolumeMounts"]}
    volumes = {v["name"]: v for v in singleuser["storage"]["extraVolumes"]}
    exchange = singleuser["extraEnv"]["COURSE_EXCHANGE"]
    claim = volumes[mounts[exchange]]["persistentVolumeClaim"]["claimName"]
    assert claim  # one volume, mounted in every user's pod
    assert (singleuser["memory"]["limit"], singleuser["cpu"]["limit"]) == ("2G", 1)
    hub = values["hub"]["config"]
    groups = hub["JupyterHub"]["load_groups"]
    assert set(groups) == {"formgrade-explaining-convnets", "nbgrader-explaining-convnets"}
    overrides = hub["KubeSpawner"]["group_overrides"]["instructors"]
    assert overrides["groups"] == ["formgrade-explaining-convnets"]
    roles = "/opt/explaining-convnets/deploy/roles"
    assert singleuser["extraEnv"]["JUPYTER_CONFIG_PATH"] == f"{roles}/student"
    environment = overrides["spawner_override"]["environment"]
    assert environment["JUPYTER_CONFIG_PATH"] == f"{roles}/instructor"


def dockerfile_runs() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines() if line.startswith("RUN ")]


def test_the_user_image_installs_the_course_as_the_deploy_readme_says():
    readme = (DEPLOY / "README.md").read_text()
    (install,) = [
        run for run in dockerfile_runs() if "pip install" in run and "[instructor]" in run
    ]
    command = install.split("&&")[0].strip()
    assert command in " ".join(readme.split()), command
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY" in text and "/opt/explaining-convnets" in text
    assert re.search(r"jupyterhub==5\.\d+\.\d+", text)  # the hub of the Zero to JupyterHub chart


def test_binder_installs_the_package_with_cpu_torch():
    requirements = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    lines = [line.split("#")[0].strip() for line in requirements]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert {"torch", "torchvision"} <= {re.split(r"[<>=!~ ]", line)[0] for line in lines}
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert re.search(r"^pip install .*-e \.", post_build.read_text(), flags=re.M)
