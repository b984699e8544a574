from biotwin.cli import app

app()
