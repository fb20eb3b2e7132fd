"""``python -m services.gateway``: check the settings, then serve."""

from __future__ import annotations

import ssl
import sys

from services.gateway.app import create_app
from services.gateway.settings import SERVICE, load_settings
from services.gateway.tls import server_ssl_context
from shared.service import EXIT_BAD_SETTINGS, load_or_exit, run


def main() -> None:
    settings = load_or_exit(load_settings, SERVICE)
    try:
        ssl_context = server_ssl_context(settings.tls)
    except (ssl.SSLError, OSError):
        print(f"{SERVICE}: configuration error: Server__TlsCertFile/Server__TlsKeyFile: "
              "the certificate and key cannot be loaded as a matching PEM pair",
              file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    common = settings.common
    run(create_app(settings), service=SERVICE, host=common.host, port=common.port,
        log_level=common.log_level, ssl_context=ssl_context)


if __name__ == "__main__":
    main()
