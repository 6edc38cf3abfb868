"""One JupyterHub for a class: instructors and students, nbgrader's exchange, resource limits.

``jupyterhub_config.py`` (beside this file) reads the settings from the environment with
``Settings.from_environ()``, checks them with ``check(settings)`` and applies them with
``configure(c, settings, course)``. A setting that cannot work raises ``SettingError`` before
anything starts, with a message that names the setting and says what to do.

Settings (environment variables of the hub):

    COURSE_DIR          the course repository that instructors grade in (nbgrader's course
                        directory; its nbgrader_config.py names the course and the exchange)
    COURSE_EXCHANGE     nbgrader's exchange folder, shared by everyone: mode 1777
    COURSE_INSTRUCTORS  user names, comma-separated (at least one)
    COURSE_STUDENTS     user names, comma-separated
    COURSE_MEM_LIMIT    memory of one user's server, e.g. 2G
    COURSE_CPU_LIMIT    CPU cores of one user's server, e.g. 1
    COURSE_LECTURES     the installed lectures (no solution there), copied into each user's home
                        at every start: missing files only, a student's edited copy is kept
    COURSE_IDLE_TIMEOUT seconds after which an idle server is stopped (0: never)
    COURSE_SSL_CERT     HTTPS: the certificate file (with COURSE_SSL_KEY, its key); empty: plain
                        HTTP, e.g. behind a TLS proxy
    COURSE_SPAWNER      systemd (limits enforced), local (one system user each, limits not
                        enforced) or simple (everyone runs as the hub's user: tests only)

Roles: instructors form the JupyterHub group ``formgrade-<course>``, students ``nbgrader-<course>``
(the names nbgrader's JupyterHub integration reads). Each role's servers read the Jupyter
configuration in ``roles/<role>/`` (nbgrader's lab and server extensions for that role, and
nbgrader's settings); instructors may also open and manage their students' servers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLES = HERE / "roles"
NBGRADER_EXCHANGE = "/usr/local/share/nbgrader/exchange"  # nbgrader's own default
LECTURES = "/usr/local/share/explaining-convnets/lectures"  # deploy/README.md: Install

SPAWNERS = {
    "systemd": "systemdspawner.SystemdSpawner",
    "local": "jupyterhub.spawner.LocalProcessSpawner",
    "simple": "jupyterhub.spawner.SimpleLocalProcessSpawner",
}
USER_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?[KMGT]$")


class SettingError(Exception):
    """A deployment setting that cannot work; the message names it and says what to do."""


@dataclass(frozen=True)
class Settings:
    course_dir: Path
    exchange: Path
    instructors: tuple[str, ...]
    students: tuple[str, ...]
    mem_limit: str = "2G"
    cpu_limit: str = "1"
    spawner: str = "systemd"
    lectures: Path = Path(LECTURES)
    idle_timeout: str = "3600"
    ssl_cert: str = ""
    ssl_key: str = ""

    @classmethod
    def from_environ(cls, environ=None) -> Settings:
        environ = os.environ if environ is None else environ
        return cls(
            course_dir=Path(environ.get("COURSE_DIR", "/srv/explaining-convnets")),
            exchange=Path(environ.get("COURSE_EXCHANGE", NBGRADER_EXCHANGE)),
            instructors=names(environ.get("COURSE_INSTRUCTORS", "")),
            students=names(environ.get("COURSE_STUDENTS", "")),
            mem_limit=environ.get("COURSE_MEM_LIMIT", cls.mem_limit).strip(),
            cpu_limit=environ.get("COURSE_CPU_LIMIT", cls.cpu_limit).strip(),
            spawner=environ.get("COURSE_SPAWNER", cls.spawner).strip(),
            lectures=Path(environ.get("COURSE_LECTURES", LECTURES)),
            idle_timeout=environ.get("COURSE_IDLE_TIMEOUT", cls.idle_timeout).strip(),
            ssl_cert=environ.get("COURSE_SSL_CERT", "").strip(),
            ssl_key=environ.get("COURSE_SSL_KEY", "").strip(),
        )


@dataclass(frozen=True)
class Course:
    """What the course's own nbgrader_config.py says."""

    course_id: str
    exchange: Path


def names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


# --- the checks --------------------------------------------------------------------------------


def check(settings: Settings) -> Course:
    """Check every setting; return what the course directory says. Raises ``SettingError``."""
    check_users(settings.instructors, settings.students)
    check_limits(settings.mem_limit, settings.cpu_limit)
    check_spawner(settings.spawner)
    check_idle_timeout(settings.idle_timeout)
    check_ssl(settings.ssl_cert, settings.ssl_key)
    check_exchange(settings.exchange)
    check_lectures(settings.lectures, settings.course_dir)
    course = read_course(settings.course_dir)
    check_course_exchange(course, settings.exchange)
    if settings.spawner != "simple":  # "simple": everyone is the hub's user (tests only)
        check_private(settings.course_dir, settings.students)
    return course


def check_users(instructors: tuple[str, ...], students: tuple[str, ...]) -> None:
    if not instructors:
        raise SettingError(
            "COURSE_INSTRUCTORS is empty: name at least one instructor, "
            "user names separated by commas (COURSE_INSTRUCTORS=ada,ben)."
        )
    for setting, users in (("COURSE_INSTRUCTORS", instructors), ("COURSE_STUDENTS", students)):
        for name in users:
            if not USER_NAME.match(name):
                raise SettingError(
                    f"{setting} names {name!r}, which cannot be a user name here: use lower-case "
                    "letters, digits, '.', '_' and '-' (nbgrader also names submissions "
                    "'<student>+<assignment>+<time>', so no '+' or '*')."
                )
    both = sorted(set(instructors) & set(students))
    if both:
        raise SettingError(
            f"COURSE_INSTRUCTORS and COURSE_STUDENTS both name {', '.join(both)}: a user is an "
            "instructor or a student, not both. Remove them from one of the two lists "
            "(an instructor can look at the student view through nbgrader's Assignments tab)."
        )


def check_limits(mem_limit: str, cpu_limit: str) -> None:
    if not MEMORY.match(mem_limit):
        raise SettingError(
            f"COURSE_MEM_LIMIT={mem_limit!r} is not a memory size: write a number followed by "
            "K, M, G or T, e.g. COURSE_MEM_LIMIT=2G (one user's server; the course needs "
            "about 1G)."
        )
    try:
        cores = float(cpu_limit)
    except ValueError:
        cores = 0.0
    if not cores > 0:
        raise SettingError(
            f"COURSE_CPU_LIMIT={cpu_limit!r} is not a number of CPU cores: write a positive "
            "number, e.g. COURSE_CPU_LIMIT=1 or 0.5."
        )


def check_spawner(spawner: str) -> None:
    if spawner not in SPAWNERS:
        raise SettingError(
            f"COURSE_SPAWNER={spawner!r} is unknown: use one of {', '.join(SPAWNERS)} "
            "(systemd enforces the memory and CPU limits)."
        )
    if spawner == "systemd":
        try:
            import systemdspawner  # noqa: F401
        except ImportError:
            raise SettingError(
                "COURSE_SPAWNER=systemd needs the package jupyterhub-systemdspawner: "
                "pip install jupyterhub-systemdspawner (or COURSE_SPAWNER=local, which "
                "does not enforce the memory and CPU limits)."
            ) from None


def check_idle_timeout(idle_timeout: str) -> None:
    if not idle_timeout.isdigit():
        raise SettingError(
            f"COURSE_IDLE_TIMEOUT={idle_timeout!r} is not a number of seconds: write a whole "
            "number, e.g. COURSE_IDLE_TIMEOUT=3600 (an idle server stops after an hour; its "
            "files stay), or 0 to keep idle servers running."
        )
    if int(idle_timeout) > 0:
        try:
            import jupyterhub_idle_culler  # noqa: F401
        except ImportError:
            raise SettingError(
                f"COURSE_IDLE_TIMEOUT={idle_timeout} needs the package jupyterhub-idle-culler: "
                "pip install jupyterhub-idle-culler (or COURSE_IDLE_TIMEOUT=0: no culling)."
            ) from None


def check_ssl(cert: str, key: str) -> None:
    """HTTPS needs both files, readable by the hub; neither: plain HTTP (behind a TLS proxy)."""
    if bool(cert) != bool(key):
        given, missing = ("COURSE_SSL_CERT", "COURSE_SSL_KEY") if cert else (
            "COURSE_SSL_KEY", "COURSE_SSL_CERT")  # fmt: skip
        raise SettingError(
            f"{given} is set but {missing} is empty: HTTPS needs the certificate and its key, "
            "e.g. COURSE_SSL_CERT=/etc/letsencrypt/live/<server>/fullchain.pem and "
            "COURSE_SSL_KEY=/etc/letsencrypt/live/<server>/privkey.pem (or set neither and put "
            "the hub behind a TLS proxy, deploy/README.md)."
        )
    for setting, path in (("COURSE_SSL_CERT", cert), ("COURSE_SSL_KEY", key)):
        if not path:
            continue
        if not Path(path).is_file():
            raise SettingError(
                f"{setting}={path}: no such file. Point it at the PEM file your certificate "
                "authority gave (Let's Encrypt: /etc/letsencrypt/live/<server>/)."
            )
        if not os.access(path, os.R_OK):
            raise SettingError(
                f"{setting}={path}: the hub cannot read this file. Start the hub as root, or "
                f"let its user read the file (chgrp <hub's group> {path} && chmod g+r {path})."
            )
    proxy = shutil.which("configurable-http-proxy")
    if cert and proxy and "python" in Path(proxy).read_text(errors="replace")[:200].split("\n")[0]:
        raise SettingError(
            f"COURSE_SSL_CERT is set, but the proxy on the hub's PATH ({proxy}) is PyPI's "
            "configurable-http-proxy, which does not do HTTPS. Install npm's "
            "(npm install -g configurable-http-proxy, deploy/README.md: Install) and put it "
            "first on the hub's PATH, or unset COURSE_SSL_CERT and COURSE_SSL_KEY and put the "
            "hub behind a TLS proxy (deploy/README.md: HTTPS)."
        )


def check_lectures(lectures: Path, course_dir: Path) -> None:
    """The lectures students copy home: a folder of notebooks outside the (closed) course."""
    fix = f"sudo mkdir -p {lectures.parent} && sudo cp -r {course_dir}/lectures {lectures.parent}/"
    if not lectures.is_dir() or not any(lectures.glob("*.ipynb")):
        raise SettingError(
            f"COURSE_LECTURES={lectures}: no lecture notebooks there. Every user's server copies "
            f"the lectures from this folder into the user's home; install them: {fix}"
        )
    if lectures.resolve().is_relative_to(course_dir.resolve()):
        raise SettingError(
            f"COURSE_LECTURES={lectures} is inside the course directory, which students cannot "
            f"read. Install the lectures where every user may read them: {fix}"
        )


def check_exchange(exchange: Path) -> None:
    fix = f"sudo mkdir -p {exchange} && sudo chmod 1777 {exchange}"
    if not exchange.is_absolute():
        raise SettingError(
            f"COURSE_EXCHANGE={exchange} is a relative path: every user's server must find "
            f"the same folder, so give an absolute path (nbgrader's default: {NBGRADER_EXCHANGE})."
        )
    if not exchange.exists():
        raise SettingError(
            f"COURSE_EXCHANGE={exchange}: the folder does not exist. nbgrader's exchange is "
            f"where instructors release and students submit; create it: {fix}"
        )
    if not exchange.is_dir():
        raise SettingError(
            f"COURSE_EXCHANGE={exchange} is a file, not a folder. Point COURSE_EXCHANGE at a "
            f"folder, or remove the file and create the folder: {fix}"
        )
    mode = stat.S_IMODE(exchange.stat().st_mode)
    if mode & 0o1777 != 0o1777:
        raise SettingError(
            f"COURSE_EXCHANGE={exchange} has mode {mode:04o}, and nbgrader's exchange needs 1777: "
            "every user writes there (world-writable, rwx for all) and nobody may delete "
            f"another's files (sticky bit). Fix: sudo chmod 1777 {exchange}"
        )


READ_COURSE = """
import json, os, sys
from traitlets.config.loader import PyFileConfigLoader
sys.path.insert(0, os.getcwd())
config = PyFileConfigLoader("nbgrader_config.py", path=os.getcwd()).load_config()
print(json.dumps({
    "course_id": config.CourseDirectory.get("course_id", ""),
    "exchange": config.Exchange.get("root", sys.argv[1]),
}))
"""


def read_course(course_dir: Path) -> Course:
    """Load the course's nbgrader_config.py (in a separate Python, as nbgrader does: in the
    course directory, as the user who owns it) and return its course id and exchange."""
    if not (course_dir / "nbgrader_config.py").is_file():
        raise SettingError(
            f"COURSE_DIR={course_dir}: no nbgrader_config.py there. COURSE_DIR is the course "
            "repository that instructors grade in: clone the course there "
            f"(git clone <the course repository> {course_dir}), or point COURSE_DIR at it."
        )
    owner = course_dir.stat()
    as_owner = {}
    if os.geteuid() == 0 and owner.st_uid != 0:
        as_owner = {"user": owner.st_uid, "group": owner.st_gid}
    result = subprocess.run(
        [sys.executable, "-c", READ_COURSE, NBGRADER_EXCHANGE],
        cwd=course_dir,
        capture_output=True,
        text=True,
        timeout=120,
        **as_owner,
    )
    if result.returncode != 0:
        raise SettingError(
            f"COURSE_DIR={course_dir}: its nbgrader_config.py fails to load; fix it "
            f"(python -m nbgrader --help-all shows nbgrader's settings):\n{result.stderr[-2000:]}"
        )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if not found["course_id"]:
        raise SettingError(
            f"COURSE_DIR={course_dir}: its nbgrader_config.py sets no course id; add "
            "c.CourseDirectory.course_id = '<course>' (the JupyterHub groups are named after it)."
        )
    exchange = Path(found["exchange"])
    if not exchange.is_absolute():
        exchange = course_dir / exchange
    return Course(course_id=found["course_id"], exchange=exchange)


PRIVATE = ("solutions", "grading", ".git")
"""What only instructors may read in the course directory: the solutions, the grading work
(gradebook, submissions, feedback) and the history (every solution ever committed)."""


def _identity(user: str | None) -> tuple[int | None, set[int]]:
    """A system user's uid and groups; ``(None, set())`` for anyone else."""
    import grp
    import pwd

    if user is None:
        return None, set()
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None, set()
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {entry.pw_gid}
    return entry.pw_uid, groups


def _allowed(info: os.stat_result, uid: int | None, groups: set[int], want: int) -> bool:
    """Does ``uid`` (in ``groups``) have the permission bits ``want`` (4 r, 1 x) on ``info``?"""
    if uid is not None and info.st_uid == uid:
        return bool(info.st_mode >> 6 & want == want)
    if info.st_gid in groups:
        return bool(info.st_mode >> 3 & want == want)
    return bool(info.st_mode & want == want)


def readable_by(course_dir: Path, path: Path, user: str | None) -> bool:
    """Can ``user`` (None: any user of the machine) reach ``path`` in ``course_dir`` and read it?"""
    uid, groups = _identity(user)
    if uid == 0:
        return True
    inside = path.relative_to(course_dir).parts
    folders = [course_dir.joinpath(*inside[:i]) for i in range(len(inside))]
    if not all(_allowed(folder.stat(), uid, groups, 1) for folder in folders):
        return False
    return _allowed(path.stat(), uid, groups, 4)


def check_private(course_dir: Path, students: tuple[str, ...]) -> None:
    """The solutions, the grading work and the history must be closed to every student (and to
    any other user of the machine): the hub does not start while one could read them."""
    for name in PRIVATE:
        path = course_dir / name
        if not path.exists():
            continue
        for user in [None, *students]:
            if not readable_by(course_dir, path, user):
                continue
            who = "every user of this machine" if user is None else f"the student {user}"
            fix = (
                f"chgrp -R instructors {course_dir} && chmod -R o-rwx {course_dir} "
                "(the instructors' group, README: Install)"
            )
            group = course_dir.stat().st_gid
            if user is not None and group in _identity(user)[1]:
                import grp

                fix = f"gpasswd -d {user} {grp.getgrgid(group).gr_name}; then {fix}"
            raise SettingError(
                f"COURSE_DIR={course_dir}: {who} can read {path} (solutions, grading data or "
                f"the course's history). Close the course directory to all but the "
                f"instructors: {fix}. Students get the lectures and the released exercises "
                "elsewhere (the installed package and nbgrader's exchange)."
            )


def check_course_exchange(course: Course, exchange: Path) -> None:
    """The instructors' nbgrader (run in COURSE_DIR) must release into the class exchange."""
    if course.exchange.resolve() == exchange.resolve():
        return
    if course.exchange.is_symlink() or course.exchange.exists():
        todo = (
            f"replace it with a link: rm -r {course.exchange} && ln -s {exchange} {course.exchange}"
        )
    else:
        todo = f"link it: mkdir -p {course.exchange.parent} && ln -s {exchange} {course.exchange}"
    raise SettingError(
        f"The course's nbgrader_config.py puts nbgrader's exchange at {course.exchange} "
        f"(Exchange.root), but the class exchange is COURSE_EXCHANGE={exchange}: students would "
        f"never see what instructors release. Make the course's exchange the class exchange; {todo}"
    )


# --- the configuration -------------------------------------------------------------------------


def groups(course_id: str) -> tuple[str, str]:
    """nbgrader's JupyterHub group names: (instructors, students)."""
    return f"formgrade-{course_id}", f"nbgrader-{course_id}"


COPY_LECTURES = """
import shutil, sys
from pathlib import Path

source = Path(sys.argv[1])
target = Path.home() / source.name
try:
    for path in sorted(source.rglob("*")):
        inside = path.relative_to(source)
        if not path.is_file() or any(part.startswith(".") for part in inside.parts):
            continue
        if not (target / inside).exists():  # a student's own copy is never replaced
            (target / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / inside)
except OSError as error:
    print(f"The lectures were not all copied to {target}: {error}", file=sys.stderr)
"""
"""Copy the lectures (``argv[1]``) into the user's home, missing files only (run as the user)."""

START = (
    COPY_LECTURES
    + """
from jupyterhub.singleuser import main

sys.argv = ["jupyterhub-singleuser", *sys.argv[2:]]
sys.exit(main())
"""
)
"""A user's server: the lectures copied home, then JupyterHub's single-user server."""


def configure(c, settings: Settings, course: Course) -> None:
    """Set JupyterHub's configuration ``c`` for the class."""
    instructors, students = groups(course.course_id)
    c.JupyterHub.authenticator_class = "pam"  # system users; any other authenticator works too
    c.Authenticator.allowed_users = set(settings.instructors) | set(settings.students)
    c.JupyterHub.load_groups = {
        instructors: {"users": list(settings.instructors)},
        students: {"users": list(settings.students)},
    }
    c.JupyterHub.load_roles = [
        {
            "name": "instructor",
            "description": "Open, start and stop the servers of the course's students",
            "groups": [instructors],
            # A user's server resolves user filters only, not group filters (JupyterHub's
            # check_scopes): access is granted student by student.
            "scopes": [f"read:users!group={students}", f"servers!group={students}"]
            + [f"access:servers!user={name}" for name in settings.students],
        }
    ]

    c.JupyterHub.spawner_class = SPAWNERS[settings.spawner]
    # Every start copies new lectures home first (as the user; their edited copies are kept).
    c.Spawner.cmd = [sys.executable, "-c", START, str(settings.lectures)]
    c.Spawner.default_url = "/lab"
    c.Spawner.mem_limit = settings.mem_limit
    c.Spawner.cpu_limit = float(settings.cpu_limit)
    # Students: their home, the student tools, nbgrader's exchange; their own ~/.jupyter cannot
    # turn the instructor tools back on.
    c.Spawner.notebook_dir = "~"
    c.Spawner.disable_user_config = True
    c.Spawner.environment = {
        "JUPYTER_CONFIG_PATH": str(ROLES / "student"),
        "COURSE_ID": course.course_id,
        "COURSE_EXCHANGE": str(settings.exchange),
    }
    # Instructors: the course directory, the formgrader, the instructor tools.
    c.Spawner.group_overrides = {
        "instructors": {
            "groups": [instructors],
            "spawner_override": {
                "notebook_dir": str(settings.course_dir),
                "disable_user_config": False,
                "environment": {
                    "JUPYTER_CONFIG_PATH": str(ROLES / "instructor"),
                    "COURSE_DIR": str(settings.course_dir),
                },
            },
        }
    }
    if settings.ssl_cert:
        c.JupyterHub.ssl_cert = settings.ssl_cert
        c.JupyterHub.ssl_key = settings.ssl_key
    if int(settings.idle_timeout) > 0:  # stop idle servers: their memory back to the class
        c.JupyterHub.services = [
            {
                "name": "idle-culler",
                "command": [
                    sys.executable, "-m", "jupyterhub_idle_culler",
                    f"--timeout={settings.idle_timeout}",
                ],
            }
        ]  # fmt: skip
        c.JupyterHub.load_roles.append(
            {
                "name": "idle-culler",
                "description": "Stop servers idle longer than COURSE_IDLE_TIMEOUT",
                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
                "services": ["idle-culler"],
            }
        )
    if settings.spawner == "systemd":
        c.SystemdSpawner.isolate_tmp = True
        c.SystemdSpawner.isolate_devices = True
        c.SystemdSpawner.disable_user_sudo = True
    if settings.spawner == "simple" and os.geteuid() == 0:
        c.Spawner.args = ["--allow-root"]  # every server runs as the hub's user: tests only
