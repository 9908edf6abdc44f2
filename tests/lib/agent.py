"""Runs the real agent binary against one TPM, keeping every run's output for inspection."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.environ.get("TPM_PROVISION_BIN", os.path.join(ROOT, "build", "tpm-provision"))


class Agent:
    """Runs build/tpm-provision against one TPM; every run's output is kept for inspection."""

    def __init__(self, tcti, workdir):
        self.tcti = tcti
        self.workdir = workdir
        self.runs = []

    def run(self, *args, env=None, check=None, timeout=120, user=None, prefix=()):
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("TPM_PROVISION_", "CREDENTIALS_DIRECTORY"))}
        full_env["TPM_PROVISION_TCTI"] = self.tcti
        full_env.update(env or {})
        cmd = [*prefix, AGENT, *args]
        if user:
            # Debian's unprivileged pair is nobody:nogroup.
            cmd = ["setpriv", "--reuid=" + user, "--regid=nogroup", "--clear-groups", *cmd]
        res = subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                             timeout=timeout)
        self.runs.append(res)
        if check is not None and res.returncode != check:
            raise AssertionError("%s exited %d, expected %d\nstdout: %s\nstderr: %s" % (
                " ".join(args), res.returncode, check, res.stdout, res.stderr))
        return res

    def json(self, *args, **kw):
        res = self.run(*args, "--json", check=0, **kw)
        return json.loads(res.stdout)

    def secret_file(self, name, value, mode=0o600):
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            f.write(value if isinstance(value, bytes) else value.encode())
        os.chmod(path, mode)
        return path
