# JupyterHub baseline of `make bench` (BENCH.md figures 5-7): JupyterHub + DockerSpawner +
# NativeAuthenticator (open sign-up) + configurable-http-proxy, all local. bench/run.sh
# sets the BENCH_* variables; nothing here reaches beyond this host.
import os

c = get_config()  # noqa: F821 (provided by JupyterHub)
env = os.environ
state = env["BENCH_HUB_STATE"]
run_id = env["BENCH_RUN_ID"]

# Public side: 127.0.0.1 only. The hub's API listens on the bench network's gateway
# address so that the single-user containers can reach it, and nowhere else.
c.JupyterHub.bind_url = f"http://127.0.0.1:{env['BENCH_HUB_PORT']}"
c.JupyterHub.hub_ip = env["BENCH_HUB_IP"]
c.JupyterHub.hub_port = int(env["BENCH_HUB_API_PORT"])
c.JupyterHub.hub_connect_ip = env["BENCH_HUB_IP"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['BENCH_CHP_API_PORT']}"
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = f"{state}/jupyterhub-proxy.pid"
c.JupyterHub.log_level = "INFO"

# NativeAuthenticator 1.3.0's login handler still times logins with `self.statsd`,
# which JupyterHub 6 removed (AttributeError → 500 on every POST /hub/login). Give it
# a do-nothing statsd; remove this once NativeAuthenticator catches up.
import nativeauthenticator.handlers as _native_handlers  # noqa: E402


class _NoStatsd:
    def timer(self, *args, **kwargs):
        return self

    def start(self):
        return self

    def stop(self, *args, **kwargs):
        pass

    def incr(self, *args, **kwargs):
        pass

    def timing(self, *args, **kwargs):
        pass

    def gauge(self, *args, **kwargs):
        pass


if not hasattr(_native_handlers.LoginHandler, "statsd"):
    _native_handlers.LoginHandler.statsd = _NoStatsd()

# Accounts: NativeAuthenticator with open sign-up (no admin approval step).
c.JupyterHub.authenticator_class = "native"
c.NativeAuthenticator.open_signup = True
c.NativeAuthenticator.check_common_password = False
c.NativeAuthenticator.minimum_password_length = 8
c.Authenticator.allow_all = True

# The bench's own token, to reach /user/<name>/api/... through the proxy.
c.JupyterHub.services = [{"name": "bench", "api_token": env["BENCH_HUB_TOKEN"]}]
c.JupyterHub.load_roles = [
    {"name": "bench", "services": ["bench"],
     "scopes": ["access:servers", "admin:servers", "read:users", "servers"]},
]

# Spawner: the local image only, on the network the bench created, limits as nbgate's.
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = env["BENCH_HUB_IMAGE"]
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.network_name = env["BENCH_HUB_NETWORK"]
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.name_template = run_id + "-hub-{username}"
c.DockerSpawner.extra_create_kwargs = {"labels": {"nbgate.bench": run_id}, "user": "1000:100"}
c.DockerSpawner.mem_limit = "512M"
c.DockerSpawner.cpu_limit = 1.0
# The notebook image's jupyter_server_config.py takes base_url from NBGATE_BASE_URL.
c.DockerSpawner.environment = {"NBGATE_BASE_URL": lambda spawner: f"/user/{spawner.user.name}/"}
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
