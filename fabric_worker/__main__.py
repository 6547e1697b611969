from fabric_worker.cli.root import main

main()
