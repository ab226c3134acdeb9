from koe.cli import main

if __name__ == "__main__":  # `koe serve --workers N` spawns its workers, which import this module again
    main()
