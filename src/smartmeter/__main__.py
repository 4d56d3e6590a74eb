from smartmeter.cli.main import main

main()
