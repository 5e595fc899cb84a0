# temporary dev helper (not committed): trains the tiny model via the session fixtures, serves it, sleeps
import time
from pathlib import Path

from conftest import champion_served


def test_serve_forever(registry, clap_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devserve")
    env = {"BAYES_BEATS_REQUEST_LOG": str(tmp / "requests.sqlite"), "BAYES_BEATS_CLAP_DIR": str(clap_dir)}
    with champion_served(registry, tmp, **env) as (_, url, _):
        Path("/tmp/devserve.url").write_text(url + "\n" + str(tmp) + "\n")
        while not Path("/tmp/devserve.stop").exists():
            time.sleep(1)
