from hyperqueue_cli._main import main

main()
