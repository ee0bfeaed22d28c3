# nbgate's settings for every notebook container. The gateway passes the base URL
# and the token through the environment (NBGATE_BASE_URL, JUPYTER_TOKEN); the token
# is never put on the command line, where `ps` in another process could read it.
import os

c = get_config()  # noqa: F821 (provided by Jupyter)
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = int(os.environ.get("JUPYTER_PORT", "8888"))
c.ServerApp.open_browser = False
c.ServerApp.base_url = os.environ.get("NBGATE_BASE_URL", "/")
c.ServerApp.root_dir = "/home/jovyan"
c.ServerApp.preferred_dir = "/home/jovyan/work"
# Only the gateway talks to this server, always with the token header; the gateway
# checks Origin itself (JupyterLab's own check is off behind a token header).
c.ServerApp.allow_remote_access = True
c.ServerApp.quit_button = False
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash", "-l"]}
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None
# One pre-started kernel of the default kernelspec, hidden from the kernels API
# until a notebook asks for a kernel (nbgate_spare.py). NBGATE_SPARE_KERNEL=0 in
# the container's environment turns it off (the stock kernel manager is used).
if os.environ.get("NBGATE_SPARE_KERNEL", "1").strip().lower() not in ("0", "false", "no", "off"):
    c.ServerApp.kernel_manager_class = "nbgate_spare.SpareKernelManager"
