"""``python -m chat_proxy``: configuration from the environment (see README.md)."""

from modelkit.runner import serve

from chat_proxy.app import ChatProxySettings, build_app

if __name__ == "__main__":
    serve(ChatProxySettings, build_app)
