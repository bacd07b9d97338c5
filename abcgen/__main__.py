from abcgen.cli import main

main()
