from job.cli import main

main(prog_name="python -m job")
