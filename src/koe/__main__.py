from koe.cli import main

main()
