from fmstack.cli import app

app(prog_name="fmstack")
