# eventlet must patch the standard library before anything imports it: nameko, psycopg2 (which
# eventlet then makes cooperative) and the tests all rely on green sockets and threads.
import warnings

# Known and accepted: nameko 2.14 runs on eventlet (see README, "Versions").
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

pytest_plugins = ["kernel.testing"]
