"""JupyterLab's default settings for this role: labsettings/overrides.json beside this file
(no "Would you like to receive official Jupyter news?" prompt, nothing fetched from outside)."""

import os

c = get_config()  # noqa: F821 (Jupyter provides get_config)

c.LabApp.app_settings_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labsettings")
