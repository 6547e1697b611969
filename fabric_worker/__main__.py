from fabric_worker.cli import main

main()
